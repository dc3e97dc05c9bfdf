// Builds plotly-map.min.js from entry.js with plotly.js's own esbuild settings and two changes to
// plotly's sources, both made in `patched` below.
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

function patched(path, source) {
    source = source.replace(FOREIGN, '');
    if (/plots[\\/]map[\\/]map\.js$/.test(path)) {
        if (source.split(GEO_DATA).length !== 3) { throw new Error(`${path}: the map's update step changed; revisit build.js`); }
        source = source.split(GEO_DATA).join(STYLE_WAIT);
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
