// The grid planner's map: MapLibre GL JS and terra-draw (its MapLibre adapter and the two drawing
// modes the planner uses), exposed on one global for dashboard/assets/plan.js.
import * as maplibregl from 'maplibre-gl';
import { TerraDraw, TerraDrawLineStringMode, TerraDrawPolygonMode, TerraDrawRenderMode } from 'terra-draw';
import { TerraDrawMapLibreGLAdapter } from 'terra-draw-maplibre-gl-adapter';

// MapLibre 6 runs its tile and GeoJSON parsing in a module worker loaded from its own file; this
// bundle is a classic script, so the worker's address is set here: the file beside this one.
const script = document.currentScript;
if (script && script.src) {
    maplibregl.setWorkerUrl(new URL('plan-map-worker.js', script.src).href);
}

window.gridwatchMapLib = {
    maplibregl,
    TerraDraw,
    TerraDrawMapLibreGLAdapter,
    TerraDrawLineStringMode,
    TerraDrawPolygonMode,
    TerraDrawRenderMode,
};
