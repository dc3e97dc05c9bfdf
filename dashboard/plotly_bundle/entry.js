// plotly.js core with the one trace type the dashboard draws (scattermap, on MapLibre).
var Plotly = require('plotly.js/lib/core');

Plotly.register([require('plotly.js/lib/scattermap')]);

// A figure update that reaches a map whose style is still loading makes MapLibre throw
// "Style is not done loading": hold such an update until the style has loaded.
var react = Plotly.react;
Plotly.react = function (gd) {
    var args = arguments;
    var map = gd && gd._fullLayout && gd._fullLayout.map && gd._fullLayout.map._subplot &&
        gd._fullLayout.map._subplot.map;
    if (map && map.style && !map.style._loaded) {
        return new Promise(function (resolve) {
            map.once('style.load', function () { resolve(react.apply(Plotly, args)); });
        });
    }
    return react.apply(Plotly, args);
};

module.exports = Plotly;
