/* The dispatcher's desk, browser side: centre the map on a gap, play a unit's track.
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
      /* One replay tick: move the marker along the track; stop at its end. */
      step: function (n, frames) {
        var no = window.dash_clientside.no_update;
        if (!frames || !frames.length) { return [no, "", true]; }
        var i = Math.min(n * stride(frames), frames.length - 1);
        var f = frames[i];
        return [patch([assign(["data", 5, "lon"], [f[0]]), assign(["data", 5, "lat"], [f[1]])]), f[2],
                i >= frames.length - 1];
      }
    }
  });
})();
