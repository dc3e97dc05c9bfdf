/* The dispatcher's desk, browser side: select a gap, fit the map to it and its route, replay.
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

  window.dash_clientside = Object.assign({}, window.dash_clientside, {
    dispatch: {
      /* A click on a target row selects its target (kept rows: key, label, point, bounds) and marks
       * the row, with no round trip: the nearest units are asked for at once, the list is not redrawn. */
      select: function (clicks, rows) {
        var no = window.dash_clientside.no_update;
        var fired = window.dash_clientside.callback_context.triggered[0];
        if (!fired || !fired.value || !rows) { return no; }
        var id = fired.prop_id.slice(0, fired.prop_id.lastIndexOf("."));
        var key = JSON.parse(id).key;
        var row = rows.find(function (r) { return r.key === key; });
        if (!row) { return no; }
        document.querySelectorAll("#dispatch-targets tr.selected").forEach(function (tr) {
          tr.classList.remove("selected");
        });
        var clicked = document.getElementById(id);
        if (clicked) { clicked.classList.add("selected"); }
        return row;
      },
      /* Fit the map to [west, south, east, north]: center, zoom and a new uirevision. */
      fit: function (bounds) {
        var el = document.getElementById("dispatch-map");
        if (!bounds || !el || !window.gridwatch) { return window.dash_clientside.no_update; }
        var camera = window.gridwatch.cameraFor(bounds, el.clientWidth, el.clientHeight, 30);
        return patch([
          assign(["layout", "map", "center"], camera.center),
          assign(["layout", "map", "zoom"], camera.zoom),
          assign(["layout", "uirevision"], bounds.join(","))
        ]);
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
