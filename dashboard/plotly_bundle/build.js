// Builds plotly-map.min.js from entry.js with plotly.js's own esbuild settings and a few changes to
// plotly's sources, all made in `patched` below; the build fails when one no longer applies.
const fs = require('fs');
const esbuild = require('esbuild');
const { environmentPlugin } = require('esbuild-plugin-environment');
const InlineCSSPlugin = require('esbuild-plugin-inline-css');
const { version } = require('plotly.js/package.json');

const OUTFILE = './plotly-map.min.js';
// Air-gap safety: plotly's built-in basemaps, map icons, topojson and chart-studio URLs point at
// other hosts. Their origins are cut, so those URLs become paths on our own server (a 404 at worst),
// and the build fails if any of these hosts is left in the output.
const FOREIGN = /https?:\/\/(?:[a-z0-9-]+\.)*(?:cartocdn\.com|openmaptiles\.org|jsdelivr\.net|plot\.ly|plotly\.com|(?:tile|www)\.openstreetmap\.org|icgc\.cat|arcgisonline\.com|esri\.com|githubusercontent\.com)/g;

// plotly's map applies a figure update once its trace data is ready, even when the map's style is
// still loading (a fast page open gets its first update then): MapLibre throws "Style is not done
// loading" and the update is lost. The map's create and update steps also wait for the style.
const GEO_DATA = 'promises = promises.concat(geoUtils.fetchTraceGeoData(calcData));';
const STYLE_WAIT = GEO_DATA + "\n    if (map.style && !map.style._loaded) { promises.push(new Promise(function (resolve) { map.once('style.load', resolve); })); }";

// A wall applies figure updates for days, and dcc.Graph queues each one behind the last. plotly
// settles an update at the first frame drawn with the map loaded, but the map can finish loading
// without drawing another frame (a tile reload cut short), leaving the update, and every one
// queued behind it, pending for good. It is also settled when a check finds the map loaded.
const ON_RENDER = `    map.on('render', function onRender() {
        if (map.loaded()) {
            map.off('render', onRender);`;
const ON_RENDER_OR_CHECK = `    var check = setInterval(onRender, 250);
    map.on('render', onRender);
    function onRender() {
        if (map.loaded()) {
            clearInterval(check);
            map.off('render', onRender);`;
const ON_RENDER_END = `            setTimeout(resolve, 10);
        }
    });
};`;
const ON_RENDER_OR_CHECK_END = `            setTimeout(resolve, 10);
        }
    }
};`;
// Each update also added five one-time error listeners that only an error removes (a slow leak),
// and an error (a tile the server could not answer during a database outage) rejected the update,
// which stops dcc.Graph's queue: the map would take no update until the page is reloaded. Instead
// one listener per map reports errors, and updates settle as above.
const ON_ERROR = /proto\.rejectOnError = function \(reject\) \{[\s\S]*?\n\};\n/;
const ON_ERROR_LOGGED = `proto.rejectOnError = function () {
    var map = this.map;
    if (map._plotlyErrorsLogged) return;
    map._plotlyErrorsLogged = true;
    map.on('error', function (event) {
        console.warn('map: ' + ((event && event.error && event.error.message) || 'error'));
    });
};
`;

// plotly draws a new map's traces once MapLibre fires 'load': the style and every tile of the first
// view loaded and drawn. The traces' own sources are then made, parsed and drawn one after the
// other, after the tiles. They are added once the style is loaded instead, so they load beside the
// tiles (in a software-rendered browser each frame drawn while loading costs hundreds of ms).
const ON_LOAD = "map.once('load', resolve);";
const ON_STYLE_LOAD = "map.once('style.load', resolve);";

/* ``source`` with each ``from`` replaced by ``to``; fails when ``from`` does not occur ``count`` times. */
function replaced(path, source, from, to, count) {
    const found = typeof from === 'string' ? source.split(from).length - 1 : (source.match(new RegExp(from, 'g')) || []).length;
    if (found !== count) { throw new Error(`${path}: expected ${count} of ${from}, found ${found}; revisit build.js`); }
    return typeof from === 'string' ? source.split(from).join(to) : source.replace(new RegExp(from, 'g'), to);
}

function patched(path, source) {
    source = source.replace(FOREIGN, '');
    if (/plots[\\/]map[\\/]map\.js$/.test(path)) {
        source = replaced(path, source, GEO_DATA, STYLE_WAIT, 2);
        source = replaced(path, source, ON_RENDER, ON_RENDER_OR_CHECK, 1);
        source = replaced(path, source, ON_RENDER_END, ON_RENDER_OR_CHECK_END, 1);
        source = replaced(path, source, ON_ERROR, ON_ERROR_LOGGED, 1);
        source = replaced(path, source, ON_LOAD, ON_STYLE_LOAD, 1);
    }
    return source;
}

const plotlySources = {
    name: 'plotly-sources',
    setup(build) {
        build.onLoad({ filter: /plotly\.js[\\/]src[\\/].*\.js$/ }, async (args) => ({
            contents: patched(args.path, await fs.promises.readFile(args.path, 'utf8')),
            loader: 'js',
        }));
    },
};

esbuild.build({
    entryPoints: ['./entry.js'],
    outfile: OUTFILE,
    banner: { js: `/*! plotly.js v${version} (core + scattermap), MIT; built by build.js */` },
    format: 'iife',
    globalName: 'Plotly',
    bundle: true,
    minify: true,
    legalComments: 'eof',
    plugins: [plotlySources, InlineCSSPlugin(), environmentPlugin({ NODE_DEBUG: false })],
    alias: { stream: 'stream-browserify' },
    define: { global: 'window', 'define.amd': 'false' },
    target: 'es2016',
    logLevel: 'info',
}).then(() => {
    const left = fs.readFileSync(OUTFILE, 'utf8').match(FOREIGN);
    if (left) {
        console.error(`other hosts left in ${OUTFILE}: ${[...new Set(left)].join(', ')}`);
        process.exit(1);
    }
}).catch(() => process.exit(1));
