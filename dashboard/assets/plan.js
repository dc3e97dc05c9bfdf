/* The grid planner's map, browser side (the /plan page; contract: plan-state in, plan-edit/plan-pick out).
 *
 * Dash serves this file on every page: it does nothing until an element #plan-map appears. Then it
 * loads MapLibre GL JS and terra-draw (dashboard/plan_bundle, served at /plan/static/), draws the
 * township's faces coloured by grid, and turns the chosen tool's gestures into edits:
 *   select        click a grid            -> plan-pick {seq, code, add}
 *   paint         drag the brush          -> plan-edit {seq, op: "paint", grid, faces}   (on mouse up)
 *   paint-source  click a face            -> plan-edit {seq, op: "paint", grid, faces}   (its source's faces)
 *   split         draw a line (terra-draw) -> plan-edit {seq, op: "split", grid, line}
 *   reshape       draw a polygon          -> plan-edit {seq, op: "reshape", grid, polygon}
 * All styling is by feature-state, so a new plan-state repaints without refetching the faces; they
 * are fetched again only when faces_url changes. Nothing here talks to another origin. */
(function () {
  "use strict";

  var STATIC = "/plan/static/";
  var STYLE_URL = "/style.json";   // unless the map's element names one (data-style)
  var FACES = "plan-faces";        // the faces (fetched from faces_url)
  var EDGES = "plan-edges";        // one feature per pair of neighbouring faces (or face and outside)
  var FILL = "plan-face-fill";     // the layer clicks and the brush query
  var NO_COLOUR = "#cbd5e1";       // a face whose grid is unknown
  var FEEDBACK_KEEP = 200;
  var METRES_PER_DEGREE = 111320;

  var plan = window.gridwatchPlan = { map: null, ready: false, feedbackMs: [], tool: null, lastState: null };
  var lib = null;            // window.gridwatchMapLib once plan-map.min.js has run
  var loading = false;       // the bundle's <script> is in the page
  var map = null;            // the map, in `container`
  var container = null;
  var loaded = false;        // the map's style has loaded and our sources and layers are in
  var draw = null;           // terra-draw
  var state = null;          // the last plan-state (applied when the map is ready)
  var tool = { tool: "select", brush: 200, target: null };
  var seq = Date.now();      // edits and picks carry an increasing seq, across page loads too

  // What is drawn, kept to set only the feature-states that change.
  var facesUrl = null;       // the faces now in the source (or being fetched)
  var faces = null;          // {id: {c: [lon, lat] centroid, source: int}} of the drawn faces
  var bySource = null;       // {source: [face ids]}
  var edges = null;          // [{a: face id, b: face id or null}] indexed by edge feature id
  var edgesOf = null;        // {face id: [edge ids]}
  var gridOf = {};           // {face id: grid code} as drawn (the server's, or a stroke's paint)
  var shown = {};            // {face id: {colour, selected, locked}} as set
  var edgeShown = [];        // [{border, selected}] as set
  var grids = {};            // {code: {colour, locked, label}}
  var problemOfGrid = {};    // {code: "hard" | "soft"} from state.problems
  var problemOfFace = {};    // {face id: "hard" | "soft"} (the faces of a gap)
  var selected = {};         // {code: true}
  var township = null;       // fit the view again only when it changes
  var stroke = null;         // the paint stroke under way: {faces: {id: true}, ids: [], last: point}
  var pendingFeedback = [];  // event time stamps of painted pointer events not yet drawn
  var tip = null, note = null, noteTimer = null;

  function noUpdate() { return window.dash_clientside.no_update; }
  function send(id, data) { window.dash_clientside.set_props(id, { data: data }); }
  function nextSeq() { seq += 1; return seq; }

  /* ---- loading the bundle when #plan-map appears ---------------------------------------------- */

  function watch() {
    var el = document.getElementById("plan-map");
    if (!el) { return; }
    if (map && container === el && document.body.contains(el)) { return; }
    if (map) { teardown(); }
    if (!lib) { loadBundle(); return; }
    create(el);
  }

  function loadBundle() {
    if (window.gridwatchMapLib) { lib = window.gridwatchMapLib; watch(); return; }
    if (loading) { return; }
    loading = true;
    var link = document.createElement("link");
    link.rel = "stylesheet";
    link.href = STATIC + "plan-map.css";
    document.head.appendChild(link);
    var script = document.createElement("script");
    script.src = STATIC + "plan-map.min.js";
    script.onload = function () { lib = window.gridwatchMapLib; watch(); };
    script.onerror = function () { loading = false; console.warn("plan: the map library did not load"); };
    document.head.appendChild(script);
  }

  function teardown() {  // the page left (SPA routing) and #plan-map was replaced or removed
    if (draw) { try { draw.stop(); } catch (e) { /* the map is gone already */ } }
    try { map.remove(); } catch (e) { /* idem */ }
    map = container = draw = null;
    plan.map = null;
    plan.ready = loaded = false;
    facesUrl = faces = bySource = edges = edgesOf = township = stroke = null;
    gridOf = {}; shown = {}; edgeShown = [];
  }

  /* ---- the map ---------------------------------------------------------------------------------- */

  function create(el) {
    var maplibregl = lib.maplibregl;
    container = el;
    var options = {
      container: el, style: el.dataset.style || STYLE_URL, attributionControl: false, dragRotate: false,
      pitchWithRotate: false, touchPitch: false, center: [0, 0], zoom: 1,
      doubleClickZoom: false,  // a double click ends nothing here, and must not zoom while drawing
      boxZoom: false           // it takes shift-drags, and swallows the shift-click that adds a grid
    };
    if (state && state.bounds) { options.bounds = state.bounds; options.fitBoundsOptions = { padding: 20 }; }
    map = new maplibregl.Map(options);
    map.touchZoomRotate.disableRotation();
    plan.map = map;
    tip = element("plan-tip");
    note = element("plan-note");
    map.on("load", onLoad);
    map.on("render", onRender);
    map.on("error", function (e) { console.error("plan map: " + ((e && e.error && e.error.message) || "error")); });
  }

  function element(className) {
    var div = document.createElement("div");
    div.className = className;
    div.hidden = true;
    container.appendChild(div);
    return div;
  }

  function onLoad() {
    map.addImage("plan-hatch", hatch(), { pixelRatio: 2 });
    map.addSource(FACES, { type: "geojson", data: empty() });
    map.addSource(EDGES, { type: "geojson", data: empty() });
    var state_ = function (name) { return ["boolean", ["feature-state", name], false]; };
    map.addLayer({ id: FILL, type: "fill", source: FACES, paint: {
      "fill-color": ["to-color", ["coalesce", ["feature-state", "colour"], NO_COLOUR]],
      "fill-opacity": ["case", state_("selected"), 0.8, 0.55] } });
    map.addLayer({ id: "plan-face-locked", type: "fill", source: FACES, paint: {
      "fill-pattern": "plan-hatch", "fill-opacity": ["case", state_("locked"), 1, 0] } });
    map.addLayer({ id: "plan-face-edge", type: "line", source: FACES, minzoom: 14, paint: {
      "line-color": "#ffffff", "line-opacity": 0.7, "line-width": 0.5 } });
    // The departments' source grids the faces were cut from: thin dashes where two sources meet.
    map.addLayer({ id: "plan-source-border", type: "line", source: EDGES, minzoom: 12, paint: {
      "line-color": "#e2e8f0", "line-width": 1, "line-dasharray": [2, 2],
      "line-opacity": ["case", state_("source"), 0.8, 0] } });
    // A selected grid: a white casing under a thicker border (any grid colour may sit beside it).
    map.addLayer({ id: "plan-selected-border", type: "line", source: EDGES,
      layout: { "line-cap": "round", "line-join": "round" }, paint: {
        "line-color": "#ffffff", "line-width": 8, "line-opacity": ["case", state_("selected"), 1, 0] } });
    map.addLayer({ id: "plan-border", type: "line", source: EDGES,
      layout: { "line-cap": "round", "line-join": "round" }, paint: {
        "line-color": "#0f172a",
        "line-width": ["interpolate", ["linear"], ["zoom"],
          10, ["case", state_("selected"), 2.5, 1], 15, ["case", state_("selected"), 4, 2.5]],
        "line-opacity": ["case", state_("border"), 1, 0] } });
    // Problems: the faces of a grid that breaks a rule (or a gap's faces), hard ones filled.
    var problem = ["coalesce", ["feature-state", "problem"], ""];
    map.addLayer({ id: "plan-problem-fill", type: "fill", source: FACES, paint: {
      "fill-color": "#dc2626", "fill-opacity": ["match", problem, "hard", 0.45, 0] } });
    map.addLayer({ id: "plan-problem-line", type: "line", source: FACES, paint: {
      "line-color": ["match", problem, "hard", "#dc2626", "#f59e0b"],
      "line-width": ["match", problem, "hard", 2, 1],
      "line-opacity": ["match", problem, "hard", 1, "soft", 0.8, 0] } });
    startDraw();
    bindPointer();
    loaded = true;
    if (state) { apply(state); }
    setTool(tool);
  }

  function empty() { return { type: "FeatureCollection", features: [] }; }

  /* A 16x16 diagonal hatch (drawn at pixel ratio 2): locked grids. */
  function hatch() {
    var size = 16, data = new Uint8Array(size * size * 4);
    for (var y = 0; y < size; y++) {
      for (var x = 0; x < size; x++) {
        if ((x + y) % 8 < 2) {
          var i = (y * size + x) * 4;
          data[i] = 15; data[i + 1] = 23; data[i + 2] = 42; data[i + 3] = 200;
        }
      }
    }
    return { width: size, height: size, data: data };
  }

  /* ---- plan-state ------------------------------------------------------------------------------- */

  function apply(s) {
    plan.lastRev = s.rev;
    plan.lastState = s;  // the state drawn, for tests and benchmarks
    if (s.bounds && s.township !== township) {
      township = s.township;
      map.fitBounds(s.bounds, { padding: 20, animate: false });
    }
    grids = {};
    (s.grids || []).forEach(function (g) { grids[g.code] = g; });
    selected = {};
    (s.selected || []).forEach(function (code) { selected[code] = true; });
    indexProblems(s.problems || []);
    showMessage(s.message);
    if (s.faces_url && s.faces_url !== facesUrl) { loadFaces(s.faces_url); return; }
    if (faces) { paintState(s); }
  }

  /* The worst problem of each grid and of each listed face (a gap's): "hard" or "soft". */
  function indexProblems(list) {
    problemOfGrid = {};
    problemOfFace = {};
    list.forEach(function (p) {
      var level = p.hard ? "hard" : "soft";
      (p.codes || []).forEach(function (code) {
        if (problemOfGrid[code] !== "hard") { problemOfGrid[code] = level; }
      });
      (p.faces || []).forEach(function (id) { problemOfFace[id] = level; });
    });
  }

  function loadFaces(url) {
    facesUrl = url;
    plan.ready = false;
    fetch(url, { credentials: "same-origin" }).then(function (r) {
      if (!r.ok) { throw new Error("faces: HTTP " + r.status); }
      return r.json();
    }).then(function (fc) {
      if (url !== facesUrl || !map) { return; }  // a newer face set was asked for meanwhile
      index(fc);
      map.removeFeatureState({ source: FACES });
      map.removeFeatureState({ source: EDGES });
      shown = {}; edgeShown = []; gridOf = {};
      map.getSource(FACES).setData(fc);
      map.getSource(EDGES).setData(edgeFeatures(fc));
      if (state) { paintState(state); }
      map.once("idle", markReady);
    }).catch(function (e) { console.warn("plan: " + e.message); facesUrl = null; });
  }

  function markReady() {
    if (map && map.queryRenderedFeatures({ layers: [FILL] }).length) { plan.ready = true; }
    else if (map) { map.once("idle", markReady); }
  }

  /* Face centroids (of the outer ring, area-weighted; the brush tests these) and source index. */
  function index(fc) {
    faces = {}; bySource = {};
    fc.features.forEach(function (f) {
      var src = f.properties && f.properties.source;
      faces[f.id] = { c: centroid(f.geometry), source: src };
      if (src !== null && src !== undefined && src >= 0) { (bySource[src] = bySource[src] || []).push(f.id); }
    });
  }

  function centroid(g) {
    var polys = g.type === "Polygon" ? [g.coordinates] : g.coordinates;
    var ax = 0, ay = 0, aa = 0;
    polys.forEach(function (poly) {
      var ring = poly[0];
      for (var i = 0, j = ring.length - 1; i < ring.length; j = i++) {
        var cross = ring[j][0] * ring[i][1] - ring[i][0] * ring[j][1];
        aa += cross; ax += (ring[j][0] + ring[i][0]) * cross; ay += (ring[j][1] + ring[i][1]) * cross;
      }
    });
    if (aa === 0) { var p = polys[0][0][0]; return [p[0], p[1]]; }
    return [ax / (3 * aa), ay / (3 * aa)];
  }

  /* The faces' boundaries cut into one MultiLineString per pair of neighbouring faces (b null: the
   * township's outside). Faces of a planar arrangement share their edges vertex for vertex, so a
   * segment met twice lies between two faces. A pair is a grid border when its faces' grids differ:
   * a feature-state, set again whenever the assignment changes. */
  function edgeFeatures(fc) {
    var seen = new Map();
    fc.features.forEach(function (f) {
      var polys = f.geometry.type === "Polygon" ? [f.geometry.coordinates] : f.geometry.coordinates;
      polys.forEach(function (poly) {
        poly.forEach(function (ring) {
          for (var i = 0; i + 1 < ring.length; i++) {
            var p = ring[i], q = ring[i + 1];
            var kp = p[0] + "," + p[1], kq = q[0] + "," + q[1];
            if (kp === kq) { continue; }
            var key = kp < kq ? kp + " " + kq : kq + " " + kp;
            var s = seen.get(key);
            if (!s) { seen.set(key, { a: f.id, b: null, line: [p, q] }); }
            else if (s.b === null) { s.b = f.id; }
          }
        });
      });
    });
    var pairs = new Map(), features = [];
    edges = []; edgesOf = {};
    seen.forEach(function (s) {
      if (s.b === s.a) { return; }  // a slit inside one face
      var a = s.b === null ? s.a : Math.min(s.a, s.b), b = s.b === null ? null : Math.max(s.a, s.b);
      var key = a + ":" + b, e = pairs.get(key);
      if (!e) {
        e = { id: edges.length, lines: [] };
        pairs.set(key, e);
        edges.push({ a: a, b: b });
        (edgesOf[a] = edgesOf[a] || []).push(e.id);
        if (b !== null) { (edgesOf[b] = edgesOf[b] || []).push(e.id); }
      }
      e.lines.push(s.line);
    });
    pairs.forEach(function (e) {
      features.push({ type: "Feature", id: e.id, properties: {},
        geometry: { type: "MultiLineString", coordinates: e.lines } });
    });
    return { type: "FeatureCollection", features: features };
  }

  /* Set every face's and edge's feature-state from a plan-state (only those that change). */
  function paintState(s) {
    var assign = s.assign || {}, fill = s.fill || null;
    Object.keys(faces).forEach(function (id) {
      var code = assign[id];
      if (code === undefined) { code = null; }
      if (stroke && stroke.faces[id]) { code = tool.target; }  // keep the stroke under way painted
      gridOf[id] = code;
      setFace(id, code, fill);
    });
    for (var e = 0; e < edges.length; e++) { setEdge(e); }
  }

  function colourOf(code, fill) {
    if (code === null) { return NO_COLOUR; }
    if (fill && fill[code]) { return fill[code]; }
    return (grids[code] && grids[code].colour) || NO_COLOUR;
  }

  function setFace(id, code, fill) {
    var want = { colour: colourOf(code, fill === undefined ? (state && state.fill) : fill),
      selected: !!selected[code], locked: !!(grids[code] && grids[code].locked),
      problem: problemOfFace[id] || (code !== null && problemOfGrid[code]) || "" };
    var was = shown[id];
    if (was && was.colour === want.colour && was.selected === want.selected && was.locked === want.locked
        && was.problem === want.problem) { return; }
    shown[id] = want;
    map.setFeatureState({ source: FACES, id: +id }, want);
  }

  function setEdge(e) {
    var pair = edges[e], ga = gridOf[pair.a], gb = pair.b === null ? undefined : gridOf[pair.b];
    var border = pair.b === null || ga !== gb;
    var want = { border: border, selected: border && (!!selected[ga] || !!selected[gb]),
      source: pair.b !== null && faces[pair.a].source !== faces[pair.b].source };  // a department's grid edge
    var was = edgeShown[e];
    if (was && was.border === want.border && was.selected === want.selected && was.source === want.source) { return; }
    edgeShown[e] = want;
    map.setFeatureState({ source: EDGES, id: e }, want);
  }

  function showMessage(text) {
    if (!note) { return; }
    note.textContent = text || "";
    note.hidden = !text;
    clearTimeout(noteTimer);
    if (text) { noteTimer = setTimeout(function () { note.hidden = true; }, 8000); }
  }

  /* ---- tools ------------------------------------------------------------------------------------ */

  function setTool(t) {
    tool = t;
    if (!loaded) { return; }
    var painting = t.tool === "paint";
    if (painting) { map.dragPan.disable(); } else { map.dragPan.enable(); }
    container.classList.toggle("plan-painting", painting);
    if (draw) {
      var mode = t.tool === "split" ? "linestring" : t.tool === "reshape" ? "polygon" : "static";
      if (draw.getMode() !== mode) { draw.clear(); draw.setMode(mode); }
    }
    plan.tool = t.tool;  // the tool in effect, for tests and benchmarks
  }

  function startDraw() {
    var L = lib;
    draw = new L.TerraDraw({
      adapter: new L.TerraDrawMapLibreGLAdapter({ map: map }),
      modes: [new L.TerraDrawLineStringMode(), new L.TerraDrawPolygonMode()]
    });
    draw.start();
    draw.on("finish", function (id) {
      var f = draw.getSnapshotFeature ? draw.getSnapshotFeature(id)
        : draw.getSnapshot().filter(function (x) { return x.id === id; })[0];
      if (!f) { return; }
      var geometry = { type: f.geometry.type, coordinates: f.geometry.coordinates };
      if (tool.tool === "split" && geometry.type === "LineString") {
        var grid = state && state.selected && state.selected[0];
        if (grid) { send("plan-edit", { seq: nextSeq(), op: "split", grid: grid, line: geometry }); }
        else { showMessage("Select the grid to split first."); }
      } else if (tool.tool === "reshape" && geometry.type === "Polygon") {
        if (tool.target) { send("plan-edit", { seq: nextSeq(), op: "reshape", grid: tool.target, polygon: geometry }); }
        else { showMessage("Choose the target grid first."); }
      }
      setTimeout(function () { if (draw) { draw.clear(); } }, 0);  // not inside terra-draw's own event
    });
  }

  function faceAt(point) {
    var hit = map.queryRenderedFeatures(point, { layers: [FILL] })[0];
    return hit ? hit.id : null;
  }

  function bindPointer() {
    map.on("click", function (e) {
      if (tool.tool === "select") {
        var id = faceAt(e.point), code = id === null ? null : (gridOf[id] === undefined ? null : gridOf[id]);
        var o = e.originalEvent;
        send("plan-pick", { seq: nextSeq(), code: code, add: !!(o.shiftKey || o.ctrlKey || o.metaKey) });
      } else if (tool.tool === "paint-source") {
        var face = faceAt(e.point);
        if (face === null || !targetReady()) { return; }
        var src = faces[face] && faces[face].source;
        var ids = (src !== null && src !== undefined && src >= 0 && bySource[src]) ? bySource[src] : [face];
        stroke = { faces: {}, ids: [], last: null };
        paintFaces(ids, e.originalEvent.timeStamp);
        endStroke();
      }
    });
    map.on("mousedown", function (e) {
      if (tool.tool !== "paint" || e.originalEvent.button !== 0 || !targetReady()) { return; }
      e.preventDefault();
      stroke = { faces: {}, ids: [], last: null };
      brushAt(e.point, e.originalEvent.timeStamp);
    });
    map.on("mousemove", function (e) {
      if (stroke && tool.tool === "paint") { brushAt(e.point, e.originalEvent.timeStamp); hideTip(); return; }
      hover(e.point);
    });
    map.on("mouseout", hideTip);
    map.on("mouseup", function () { if (stroke && tool.tool === "paint") { endStroke(); } });
  }

  // A stroke also ends when the button is let go outside the map.
  window.addEventListener("mouseup", function () { if (stroke && tool.tool === "paint") { endStroke(); } });

  function targetReady() {
    if (!tool.target) { showMessage("Choose the target grid first."); return false; }
    if (grids[tool.target] && grids[tool.target].locked) { showMessage("The target grid is locked."); return false; }
    return true;
  }

  /* The brush: faces whose centroid lies within `brush` metres of the pointer's path since the last
   * event, and the face under the pointer. Candidates come from queryRenderedFeatures over the
   * path's pixel box widened by the radius in pixels (metres per pixel at the pointer's latitude). */
  function brushAt(point, timeStamp) {
    var from = stroke.last || point;
    stroke.last = point;
    var here = map.unproject(point), there = map.unproject(from);
    var mpp = 40075016.686 * Math.cos(here.lat * Math.PI / 180) / (512 * Math.pow(2, map.getZoom()));
    var r = tool.brush / mpp + 1;
    var box = [[Math.min(point.x, from.x) - r, Math.min(point.y, from.y) - r],
               [Math.max(point.x, from.x) + r, Math.max(point.y, from.y) + r]];
    var hits = map.queryRenderedFeatures(box, { layers: [FILL] });
    var under = faceAt(point);
    var kx = METRES_PER_DEGREE * Math.cos(here.lat * Math.PI / 180), ky = METRES_PER_DEGREE;
    var ax = (there.lng - here.lng) * kx, ay = (there.lat - here.lat) * ky;
    var ids = under === null ? [] : [under];
    for (var i = 0; i < hits.length; i++) {
      var id = hits[i].id, f = faces[id];
      if (!f || stroke.faces[id]) { continue; }
      var px = (f.c[0] - here.lng) * kx, py = (f.c[1] - here.lat) * ky;
      if (segmentDistance(px, py, ax, ay) <= tool.brush) { ids.push(id); }
    }
    paintFaces(ids, timeStamp);
  }

  /* Distance from (px, py) to the segment from (0, 0) to (ax, ay). */
  function segmentDistance(px, py, ax, ay) {
    var len = ax * ax + ay * ay, t = len ? Math.max(0, Math.min(1, (px * ax + py * ay) / len)) : 0;
    var dx = px - t * ax, dy = py - t * ay;
    return Math.sqrt(dx * dx + dy * dy);
  }

  /* Give faces to the target grid at once (feature-state); faces of a locked grid are left alone. */
  function paintFaces(ids, timeStamp) {
    var target = tool.target, changed = false, touched = {};
    ids.forEach(function (id) {
      if (stroke.faces[id]) { return; }
      var code = gridOf[id];
      if (code !== null && code !== undefined && grids[code] && grids[code].locked) { return; }
      stroke.faces[id] = true;
      stroke.ids.push(+id);
      if (code === target) { return; }
      gridOf[id] = target;
      setFace(id, target);
      (edgesOf[id] || []).forEach(function (e) { touched[e] = true; });
      changed = true;
    });
    Object.keys(touched).forEach(function (e) { setEdge(+e); });
    if (changed && timeStamp !== undefined) { pendingFeedback.push(timeStamp); }
  }

  function endStroke() {
    var s = stroke;
    stroke = null;
    if (s && s.ids.length) {
      send("plan-edit", { seq: nextSeq(), op: "paint", grid: tool.target, faces: s.ids });
    }
  }

  /* Paint feedback: from a painted pointer event's time stamp to the next frame drawn after it. */
  function onRender() {
    if (!pendingFeedback.length) { return; }
    var now = performance.now();
    pendingFeedback.forEach(function (t) { plan.feedbackMs.push(Math.round((now - t) * 10) / 10); });
    pendingFeedback = [];
    if (plan.feedbackMs.length > FEEDBACK_KEEP) { plan.feedbackMs.splice(0, plan.feedbackMs.length - FEEDBACK_KEEP); }
  }

  /* ---- hover tooltip ---------------------------------------------------------------------------- */

  function hover(point) {
    if (!faces || !tip) { return; }
    var id = faceAt(point);
    if (id === null) { hideTip(); return; }
    var code = gridOf[id], g = code && grids[code];
    tip.textContent = (code || "—") + (g && g.label && g.label !== code ? " " + g.label : "")
      + (g && g.locked ? " (locked)" : "") + " · face " + id;
    tip.style.left = (point.x + 12) + "px";  // CSSOM, not a style attribute: the CSP allows it
    tip.style.top = (point.y + 12) + "px";
    tip.hidden = false;
  }

  function hideTip() { if (tip) { tip.hidden = true; } }

  /* ---- Dash ------------------------------------------------------------------------------------- */

  window.dash_clientside = Object.assign({}, window.dash_clientside, {
    plan: {
      /* Input plan-state.data: draw it (now, or once the map has loaded). */
      render: function (s) {
        if (s) {
          state = s;
          if (loaded) { apply(s); }
        }
        watch();
        return noUpdate();
      },
      /* Inputs plan-tool.value, plan-brush.value, plan-target.value. */
      tool: function (name, brush, target) {
        if (stroke) { endStroke(); }
        setTool({ tool: name || "select", brush: +brush || 200, target: target || null });
        watch();
        return noUpdate();
      }
    }
  });

  new MutationObserver(watch).observe(document.documentElement, { childList: true, subtree: true });
  if (document.readyState !== "loading") { watch(); }
  else { document.addEventListener("DOMContentLoaded", watch); }
})();
