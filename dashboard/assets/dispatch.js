/* The dispatcher's desk, browser side: select a gap, draw its route and fit the map to it, replay.
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

  /* A press on a target row selects its target (the kept row: key, label, point, bounds) at once and
   * marks the row. The listener is on the document, not on the rows: a press still counts while the
   * list is drawn anew under it, and the press costs no callback of its own. */
  function select(event) {
    var tr = event.button === 0 && event.target.closest && event.target.closest("#dispatch-targets tr.pick");
    var api = window.dash_component_api, set = window.dash_clientside && window.dash_clientside.set_props;
    if (!tr || !api || !set) { return; }
    var key = JSON.parse(tr.id).key;
    var kept = api.getLayout("dispatch-rows");
    var row = ((kept && kept.props.data) || []).find(function (r) { return r.key === key; });
    if (!row) { return; }
    document.querySelectorAll("#dispatch-targets tr.selected").forEach(function (el) {
      el.classList.remove("selected");
    });
    tr.classList.add("selected");
    set("dispatch-target", { data: row });
  }

  document.addEventListener("pointerdown", select, true);

  window.dash_clientside = Object.assign({}, window.dash_clientside, {
    dispatch: {
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
