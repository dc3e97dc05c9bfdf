/* The dispatcher's desk, browser side: draw the gap list, select a gap, draw its route and fit the map
 * to it, replay.
 * Uses window.gridwatch.cameraFor (wall.js); nothing here talks to another origin. */
(function () {
  "use strict";

  var REPLAY_TICKS = 150;  // a replay takes about this many ticks, whatever the track's length

  function patch(operations) {
    return { __dash_patch_update: "__dash_patch_update", operations: operations };
  }

  function assign(location, value) {
    return { operation: "Assign", location: location, params: { value: value } };
  }

  function stride(frames) { return Math.max(1, Math.ceil(frames.length / REPLAY_TICKS)); }

  /* The operations that fit the map to [west, south, east, north]: center, zoom and a new uirevision
   * (none while the map is not there). */
  function fitting(bounds) {
    var el = document.getElementById("dispatch-map");
    if (!bounds || !el || !window.gridwatch) { return []; }
    var camera = window.gridwatch.cameraFor(bounds, el.clientWidth, el.clientHeight, 30);
    return [assign(["layout", "map", "center"], camera.center), assign(["layout", "map", "zoom"], camera.zoom),
            assign(["layout", "uirevision"], bounds.join(","))];
  }

  /* After the next frame is painted: the map's work waits until the list the dispatcher looks at is shown. */
  function afterPaint() {
    return new Promise(function (resolve) { requestAnimationFrame(function () { setTimeout(resolve, 0); }); });
  }

  function element(tag, className, text) {
    var el = document.createElement(tag);
    if (className) { el.className = className; }
    if (text !== undefined) { el.textContent = text; }
    return el;
  }

  /* The target list (target_table in dispatch_panels.py) as a table in #dispatch-targets, the row of
   * selectedKey marked; each row carries its target's key. */
  function drawTable(table, selectedKey) {
    var panel = document.getElementById("dispatch-targets");
    if (!panel || !table) { return; }
    if (!table.rows.length) { panel.replaceChildren(element("div", "empty", table.empty)); return; }
    var out = element("table", "list"), head = element("tr"), body = element("tbody");
    if (table.caption) { out.append(element("caption", "note", table.caption)); }
    table.head.forEach(function (text) { head.append(element("th", "", text)); });
    table.rows.forEach(function (row) {
      var tr = element("tr", ["pick", row.tone, row.target.key === selectedKey ? "selected" : ""].join(" ").trim());
      tr.dataset.key = row.target.key;
      row.cells.forEach(function (cell) {
        var td = element("td", cell["class"]);
        if (cell.title) { td.title = cell.title; }
        if (cell.color) { td.style.color = cell.color; }
        if (cell.dot) { var dot = element("span", "dot"); dot.style.background = cell.dot; td.append(dot); }
        td.append(cell.text);
        tr.append(td);
      });
      body.append(tr);
    });
    var thead = element("thead");
    thead.append(head);
    out.append(thead, body);
    panel.replaceChildren(out);
  }

  /* A press on a target row selects its target (key, label, point, bounds) at once and marks the row.
   * The listener is on the document, not on the rows: a press still counts while the list is drawn
   * anew under it, and the press costs no callback of its own. */
  function select(event) {
    var tr = event.button === 0 && event.target.closest && event.target.closest("#dispatch-targets tr.pick");
    var api = window.dash_component_api, set = window.dash_clientside && window.dash_clientside.set_props;
    if (!tr || !api || !set) { return; }
    var kept = api.getLayout("dispatch-rows"), table = kept && kept.props.data;
    var row = ((table && table.rows) || []).find(function (r) { return r.target.key === tr.dataset.key; });
    if (!row) { return; }
    document.querySelectorAll("#dispatch-targets tr.selected").forEach(function (el) {
      el.classList.remove("selected");
    });
    tr.classList.add("selected");
    set("dispatch-target", { data: row.target });
  }

  document.addEventListener("pointerdown", select, true);

  window.dash_clientside = Object.assign({}, window.dash_clientside, {
    dispatch: {
      /* Draw the target list sent (a sink: nothing in the page's state changes). */
      drawTargets: function (table, target) {
        drawTable(table, target && target.key);
        return window.dash_clientside.no_update;
      },
      /* Fit the map to [west, south, east, north] (the jurisdiction as the page opens). */
      fit: function (bounds) {
        var operations = fitting(bounds);
        return operations.length ? patch(operations) : window.dash_clientside.no_update;
      },
      /* The chosen unit's route, the target and the ranked units (traces from route.first on), and the
       * map fitted to them, in one figure patch drawn once the nearest-units list is painted. */
      route: async function (route) {
        if (!route) { return window.dash_clientside.no_update; }
        await afterPaint();
        var operations = route.traces.map(function (trace, offset) {
          return assign(["data", route.first + offset], trace);
        });
        return patch(operations.concat(fitting(route.bounds)));
      },
      /* Start (or restart) the replay when there is a track. */
      play: function (n, frames) {
        if (!frames || !frames.length) { return [true, 0]; }
        return [false, 0];
      },
      /* One replay tick: move the marker along the track (or every unit's, a frame of the whole
       * situation holding lists); stop at the end. */
      step: function (n, frames) {
        var no = window.dash_clientside.no_update;
        if (!frames || !frames.length) { return [no, no, true]; }
        var i = Math.min(n * stride(frames), frames.length - 1);
        var f = frames[i];
        return [patch([assign(["data", 5, "lon"], [].concat(f[0])), assign(["data", 5, "lat"], [].concat(f[1]))]),
                f[2], i >= frames.length - 1];
      }
    }
  });
})();
