/* The wall's browser side: the MapLibre map inside plotly's Scattermap.
 * Layer toggles set style-layer visibility, the drill-down fits the map to a
 * command unit, live vector layers are refetched each slow tick, a hover panel
 * shows the catalog's popup fields in words (a place: name, zone, last visit, overdue
 * by), the clock and the picture's age tick every second, a callsign search flies
 * to its unit, marks grow with the screen as text does, a live tick waits while the map still draws
 * the last one, a map whose style failed to load asks again, and Dash's undo
 * history is kept short. Nothing here talks to another origin. */
(function () {
  "use strict";

  function mapOf(graphId) {
    var el = document.getElementById(graphId);
    var gd = el && el.querySelector(".js-plotly-plot");
    var sub = gd && gd._fullLayout && gd._fullLayout.map && gd._fullLayout.map._subplot;
    return sub && sub.map && sub.map.style && sub.map.style._loaded ? sub.map : null;
  }

  /* How much larger than at 1080 lines marks are drawn: they follow the screen as the text does
   * (wall.css's --u), twice as large on a 4K wall, never smaller than the style draws them. */
  function markScale() { return Math.max(1, Math.min(window.innerHeight / 1080, window.innerWidth / 1920)); }

  /* A size in a style (a number or an expression of one) times k: the outputs of interpolate, step,
   * match and case, the terms of a sum, the first factor of a product, else the value times k. */
  function scaled(value, k) {
    if (typeof value === "number") { return value * k; }
    if (!Array.isArray(value)) { return value; }
    var op = value[0], rest;
    if (op === "interpolate") {
      return value.slice(0, 3).concat(value.slice(3).map(function (x, i) { return i % 2 ? scaled(x, k) : x; }));
    }
    if (op === "step") {
      return value.slice(0, 2).concat(value.slice(2).map(function (x, i) { return i % 2 ? x : scaled(x, k); }));
    }
    if (op === "match" || op === "case") {
      var head = op === "match" ? 2 : 1;
      rest = value.slice(head);
      return value.slice(0, head).concat(rest.map(function (x, i) {
        return i % 2 || i === rest.length - 1 ? scaled(x, k) : x;
      }));
    }
    if (op === "+") { return ["+"].concat(value.slice(1).map(function (x) { return scaled(x, k); })); }
    if (op === "*") { return ["*", scaled(value[1], k)].concat(value.slice(2)); }
    return ["*", k, value];
  }

  var SIZES = { paint: ["circle-radius", "circle-stroke-width", "line-width"], layout: ["text-size"] };

  /* The catalog layers' sizes times markScale(), once per loaded style. */
  function scaleMarks(map) {
    var k = markScale();
    if (k === 1 || map._gridwatchScaled === map.style) { return; }
    map._gridwatchScaled = map.style;
    catalogLayers(map).forEach(function (l) {
      SIZES.paint.forEach(function (p) {
        if (l.paint && l.paint[p] !== undefined) { map.setPaintProperty(l.id, p, scaled(l.paint[p], k)); }
      });
      SIZES.layout.forEach(function (p) {
        if (l.layout && l.layout[p] !== undefined) { map.setLayoutProperty(l.id, p, scaled(l.layout[p], k)); }
      });
    });
  }

  /* Run fn(map) once the map and its style are ready. */
  function withMap(graphId, fn) {
    var map = mapOf(graphId);
    if (map) { attachHover(map); scaleMarks(map); fn(map); return; }
    setTimeout(function () { withMap(graphId, fn); }, 250);
  }

  function catalogLayers(map) {
    return map.getStyle().layers.filter(function (l) { return l.metadata && l.metadata["gridwatch:layer"]; });
  }

  /* The site's time zone and language, from the clock element the page carries. */
  function site() {
    var el = document.getElementById("wall-clock");
    return { timeZone: el ? el.dataset.timezone : undefined, locale: el && el.dataset.lang === "zh" ? "zh-CN" : "en-GB" };
  }

  function localTime(iso, withDate) {
    var s = site(), opts = { timeZone: s.timeZone, hour: "2-digit", minute: "2-digit", hour12: false };
    if (withDate) { opts.month = "2-digit"; opts.day = "2-digit"; } else { opts.second = "2-digit"; }
    return new Intl.DateTimeFormat(s.locale, opts).format(iso ? new Date(iso) : new Date());
  }

  function fill(template, values) {
    return template.replace(/\{(\w+)\}/g, function (_, k) { return values[k]; });
  }

  function duration(ms, S) {
    var minutes = Math.round(ms / 60000), h = Math.floor(minutes / 60), m = minutes % 60;
    return h ? fill(S.dur_hm, { h: h, m: (m < 10 ? "0" : "") + m }) : fill(S.dur_m, { m: m });
  }

  /* A place's rows (grid or border segment: it has a zone limit): name, zone, last visit, overdue by. */
  function placeRows(p, S) {
    var name = p.km_from !== undefined ? fill(S.segment, p) : p.name + (p.code ? " (" + p.code + ")" : "");
    var limit = p.limit_h, overdue;
    if (p.status === "unknown") {
      overdue = limit === undefined ? "—" : fill(S.more_than, { h: Math.max(S.lookback_h - limit, 0) });
    } else if (p.last_visit && limit !== undefined) {
      var late = Date.now() - Date.parse(p.last_visit) - limit * 3600000;
      overdue = late > 0 ? duration(late, S) : S.not_overdue;
    } else {
      overdue = S.not_overdue;
    }
    var rows = [[S.fields.name, name], [S.fields.zone, limit === undefined ? "—" : (S.zones[String(limit)] || "—")],
      [S.fields.last_visit, p.last_visit ? localTime(p.last_visit, true) : S.statuses.unknown],
      [S.fields.overdue_by, overdue], [S.fields.status, S.statuses[p.status] || p.status]];
    if (p.households !== undefined) { rows.push([S.fields.households, p.households]); }
    return rows;
  }

  function fieldRows(p, keys, S) {
    return keys.filter(function (k) { return p[k] !== undefined; }).map(function (k) {
      var v = p[k];
      if (typeof v === "boolean") { v = v ? S.yes : S.no; }
      else if (k === "status") { v = S.statuses[v] || v; }
      else if (k === "reported_at" || k === "last_visit") { v = localTime(v, true); }
      return [S.fields[k] || k, v];
    });
  }

  function attachHover(map) {
    if (map._gridwatchHover) { return; }
    map._gridwatchHover = true;
    map.on("mousemove", function (e) {
      var panel = document.getElementById("wall-hover");
      if (!panel) { return; }
      var ids = catalogLayers(map).filter(function (l) {
        return map.getLayoutProperty(l.id, "visibility") !== "none";
      }).map(function (l) { return l.id; });
      var hit = map.queryRenderedFeatures(e.point, { layers: ids })[0];
      if (!hit) { panel.replaceChildren(); return; }
      var meta = hit.layer.metadata, S = JSON.parse(panel.dataset.strings);
      var title = document.createElement("div");
      title.className = "hover-title";
      title.textContent = meta["gridwatch:title"];
      var keys = meta["gridwatch:popup"];
      var rows = (keys.indexOf("limit_h") >= 0 ? placeRows(hit.properties, S) : fieldRows(hit.properties, keys, S))
        .map(function (pair) {
          var row = document.createElement("div"), label = document.createElement("span");
          label.className = "hover-label";
          label.textContent = pair[0] + ": ";
          row.append(label, String(pair[1]));
          return row;
        });
      panel.replaceChildren.apply(panel, [title].concat(rows));
    });
  }

  /* The clock in the site's zone and how long ago the picture was read, every second. */
  var readAt = null;
  setInterval(function () {
    var el = document.getElementById("wall-clock");
    if (!el) { return; }
    document.getElementById("wall-clock-time").textContent = localTime(null, false);
    document.getElementById("wall-updated").textContent = readAt === null ? el.dataset.notYet
      : fill(el.dataset.updated, { n: Math.max(0, Math.round((Date.now() - readAt) / 1000)) });
  }, 1000);

  /* Center and zoom (512 px tiles, Web Mercator) that fit bounds in a width x height box. */
  function cameraFor(bounds, width, height, padding) {
    function y(lat) { var s = Math.sin(lat * Math.PI / 180); return 0.5 - Math.log((1 + s) / (1 - s)) / (4 * Math.PI); }
    function lat(yy) { return 360 / Math.PI * Math.atan(Math.exp((0.5 - yy) * 2 * Math.PI)) - 90; }
    var dx = (bounds[2] - bounds[0]) / 360, dy = y(bounds[1]) - y(bounds[3]);
    var zoom = Math.log2(Math.min((width - 2 * padding) / (dx * 512), (height - 2 * padding) / (dy * 512)));
    return { center: { lon: (bounds[0] + bounds[2]) / 2, lat: lat((y(bounds[1]) + y(bounds[3])) / 2) },
             zoom: Math.min(zoom, 16) };
  }

  /* Whether a view (the figure's centre and zoom) already shows a camera's bounds: the page opened
   * there (the server fits the scope to a wall's map). Out by at most a quarter zoom step, centre
   * within a few pixels; a Patch to the camera would only make plotly redraw every trace. */
  var FIT_ZOOM_SLACK = 0.25, FIT_CENTRE_PX = 8, FIT_ZOOM_EPSILON = 1e-9;  // the server and the browser round apart
  function shows(view, camera) {
    if (!view || !view.center || typeof view.zoom !== "number") { return false; }
    var px = 512 * Math.pow(2, camera.zoom) / 360;  // pixels per degree of longitude
    var latPx = px / Math.cos(camera.center.lat * Math.PI / 180);
    return view.zoom <= camera.zoom + FIT_ZOOM_EPSILON && camera.zoom - view.zoom < FIT_ZOOM_SLACK
      && Math.abs(view.center.lon - camera.center.lon) * px < FIT_CENTRE_PX
      && Math.abs(view.center.lat - camera.center.lat) * latPx < FIT_CENTRE_PX;
  }

  /* A map whose style could not load (the database was down as the page opened) asks again every
   * few seconds, so a wall that boots before its database draws its map once the database is back. */
  var STYLE_RETRY_MS = 5000;
  setInterval(function () {
    document.querySelectorAll(".js-plotly-plot").forEach(function (gd) {
      var sub = gd._fullLayout && gd._fullLayout.map && gd._fullLayout.map._subplot;
      var map = sub && sub.map;
      if (map && map.style && !map.style._loaded && !map.style._loadStyleRequest) {
        map.setStyle(sub.styleObj.style, { diff: false });
      }
    });
  }, STYLE_RETRY_MS);

  /* Dash keeps every input change, each interval tick among them, in an undo history the pages
   * never use (~50 bytes a tick, about 1 MB a day on a wall): only the last few are kept. */
  var HISTORY_KEPT = 100;
  setInterval(function () {
    var history = window.store && window.store.getState().history;
    if (history && history.past.length > HISTORY_KEPT) { history.past.splice(0, history.past.length - HISTORY_KEPT); }
  }, 30000);

  window.gridwatch = { map: function () { return mapOf("wall-map"); }, mapOf: mapOf, withMap: withMap,
                      cameraFor: cameraFor };

  window.dash_clientside = Object.assign({}, window.dash_clientside, {
    gridwatch: {
      /* How much larger than at 1080 lines the units are drawn (the server sizes their markers by it). */
      markScale: function () { return markScale(); },
      /* The live tick, unless the graph is still drawing the last update. A machine too slow
       * for the refresh rate skips ticks instead of queueing figures (each held in memory). */
      whenDrawn: function (n, graphId) {
        var gd = document.querySelector("#" + graphId + " .js-plotly-plot");
        return gd && gd.classList.contains("dash-graph--pending") ? window.dash_clientside.no_update : n;
      },
      setLayers: function (visible) {
        var shown = new Set(visible || []);
        withMap("wall-map", function (map) {
          catalogLayers(map).forEach(function (l) {
            map.setLayoutProperty(l.id, "visibility", shown.has(l.metadata["gridwatch:layer"]) ? "visible" : "none");
          });
        });
        return visible;
      },
      /* The figure Patch (center, zoom, uirevision) fitting the map to the bounds: plotly then
       * keeps that view across the live Patches, and a new scope resets it. None when the map
       * already shows them (the page's first fit, mostly). */
      fitBounds: function (bounds) {
        var el = document.getElementById("wall-map");
        if (!bounds || !el) { return window.dash_clientside.no_update; }
        var camera = cameraFor(bounds, el.clientWidth, el.clientHeight, 30);
        var gd = el.querySelector(".js-plotly-plot");
        if (gd && gd.layout && shows(gd.layout.map, camera)) { return window.dash_clientside.no_update; }
        var assign = function (location, value) {
          return { operation: "Assign", location: location, params: { value: value } };
        };
        return {
          __dash_patch_update: "__dash_patch_update",
          operations: [
            assign(["layout", "map", "center"], camera.center),
            assign(["layout", "map", "zoom"], camera.zoom),
            assign(["layout", "uirevision"], bounds.join(","))
          ]
        };
      },
      refreshLive: function (n) {
        if (n) {
          withMap("wall-map", function (map) {
            var seen = new Set();
            catalogLayers(map).forEach(function (l) {
              if (!l.metadata["gridwatch:live"] || seen.has(l.source)) { return; }
              seen.add(l.source);
              var source = map.getSource(l.source);
              var url = map.getStyle().sources[l.source].tiles[0].split("?")[0];
              source.setTiles([url + "?v=" + n]);
            });
          });
        }
        return n;
      },
      readAt: function (ms) {
        readAt = typeof ms === "number" ? ms : null;
        return ms;
      },
      /* The figure Patch centring the map on the unit with this callsign, close in (the live
       * update rings it). */
      flyTo: function (callsign) {
        var gd = document.querySelector("#wall-map .js-plotly-plot");
        var units = gd && gd.data && gd.data.filter(function (t) { return t.name === "units"; })[0];
        var i = units && callsign ? (units.customdata || []).findIndex(function (c) { return c[0] === callsign; }) : -1;
        if (i < 0) { return window.dash_clientside.no_update; }
        var zoom = Math.max((gd.layout.map && gd.layout.map.zoom) || 0, 13);
        var assign = function (location, value) {
          return { operation: "Assign", location: location, params: { value: value } };
        };
        return {
          __dash_patch_update: "__dash_patch_update",
          operations: [
            assign(["layout", "map", "center"], { lon: units.lon[i], lat: units.lat[i] }),
            assign(["layout", "map", "zoom"], zoom),
            assign(["layout", "uirevision"], "find:" + callsign)
          ]
        };
      },
      keepUrl: function (unit, lang) {
        var params = new URLSearchParams(window.location.search);
        if (unit) { params.set("unit", unit); } else { params.delete("unit"); }
        var query = params.toString();
        window.history.replaceState(null, "", window.location.pathname + (query ? "?" + query : ""));
        params.set("lang", lang === "zh" ? "en" : "zh");
        return window.location.pathname + "?" + params.toString();
      }
    }
  });
})();
