// Builds plan-map.min.js (MapLibre GL JS + terra-draw, one IIFE), and copies MapLibre's worker to
// plan-map-worker.js and its CSS to plan-map.css, all served from our own origin at /plan/static/.
// The build fails when an output names a host that is not on the list of never-fetched ones.
const fs = require('fs');
const esbuild = require('esbuild');
// (read from node_modules: terra-draw's package exports do not include its package.json)
const version = (name) => JSON.parse(fs.readFileSync(`node_modules/${name}/package.json`, 'utf8')).version;

const OUT = { js: './plan-map.min.js', worker: './plan-map-worker.js', css: './plan-map.css' };
const DIST = 'node_modules/maplibre-gl/dist/';
// Air-gap safety: terra-draw's marker mode has a default icon on raw.githubusercontent.com (the
// planner never uses that mode). Such origins are cut, so the URL becomes a path on our own server.
const FOREIGN = /https?:\/\/(?:[a-z0-9-]+\.)*(?:githubusercontent\.com|demotiles\.maplibre\.org|unpkg\.com|jsdelivr\.net|openstreetmap\.org\/(?!wiki)|openmaptiles\.org|cartocdn\.com)/g;
// Hosts the outputs may still name: a link in the attribution control, a help link in an error
// message, a licence comment, URL parsing with a dummy base, an XML namespace. None is fetched.
const NEVER_FETCHED = new Set(['maplibre.org', 'github.com', 'wiki.openstreetmap.org', 'maplibre.invalid', 'www.w3.org']);

function hostsIn(text) {
    return [...new Set([...text.matchAll(/https?:\/\/([a-z0-9.-]+)/gi)].map((m) => m[1]))];
}

const cutForeign = {
    name: 'cut-foreign-origins',
    setup(build) {
        build.onLoad({ filter: /node_modules[\\/]terra-draw[\\/].*\.js$/ }, async (args) => ({
            contents: (await fs.promises.readFile(args.path, 'utf8')).replace(FOREIGN, ''),
            loader: 'js',
        }));
    },
};

const banner = `/*! gridwatch plan map: maplibre-gl v${version('maplibre-gl')} (BSD-3-Clause), terra-draw v${version('terra-draw')}`
    + ` and terra-draw-maplibre-gl-adapter v${version('terra-draw-maplibre-gl-adapter')} (MIT); built by build.js */`;

esbuild.build({
    entryPoints: ['./entry.js'],
    outfile: OUT.js,
    banner: { js: banner },
    format: 'iife',
    bundle: true,
    minify: true,
    legalComments: 'eof',
    plugins: [cutForeign],
    target: 'es2020',
    // MapLibre finds its worker beside its own module through import.meta.url; entry.js sets it.
    logOverride: { 'empty-import-meta': 'silent' },
    logLevel: 'info',
}).then(() => {
    fs.writeFileSync(OUT.worker, fs.readFileSync(DIST + 'maplibre-gl-worker.mjs', 'utf8'));
    fs.writeFileSync(OUT.css, `/* maplibre-gl v${version('maplibre-gl')} dist/maplibre-gl.css */\n` + fs.readFileSync(DIST + 'maplibre-gl.css', 'utf8'));
    let bad = false;
    for (const file of Object.values(OUT)) {
        const text = fs.readFileSync(file, 'utf8');
        const left = hostsIn(text).filter((h) => !NEVER_FETCHED.has(h.toLowerCase()));
        if (left.length || FOREIGN.test(text)) {
            console.error(`other hosts left in ${file}: ${left.join(', ')}`);
            bad = true;
        }
        FOREIGN.lastIndex = 0;
        console.log(`${file}: ${(text.length / 1024).toFixed(0)} KiB`);
    }
    if (bad) { process.exit(1); }
}).catch(() => process.exit(1));
