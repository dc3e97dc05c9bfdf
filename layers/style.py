"""The MapLibre style JSON of the map, built from the layer catalog.

Every source is one of our own vector-tile layers (``/tiles/{layer}/{z}/{x}/{y}.pbf``);
the glyphs (labels) come from our own server too, and the optional on-site
basemap is the only other source. Style layers carry ``metadata`` naming their
catalog layer and popup fields, which the wall's toggles and hover panel read.
"""
from __future__ import annotations

from typing import Any

from gridwatch.layers.catalog import Layer
from gridwatch.layers.glyphs import FONTSTACK
from gridwatch.layers.tiles import TILE_GROUPS, group_of

__all__ = ["build_style", "style_layer_ids", "BACKGROUND"]

BACKGROUND = "#0b1220"


def style_layer_ids(layer: Layer, *, labels: bool) -> list[str]:
    """The ids of the style layers that draw one catalog layer."""
    parts = [*layer.styles, *(_labels(layer, "en") if labels else [])]
    return [f"{layer.id}-{spec['part']}" for spec in parts]


def _labels(layer: Layer, lang: str) -> list[dict[str, Any]]:
    """The symbol parts naming a layer's features: one, or one per band of the label's ``by`` property."""
    spec = layer.label
    if spec is None:
        return []
    name = ["get", "name"] if lang == "zh" else ["coalesce", ["get", "name_en"], ["get", "name"]]
    offset = spec["placement"] == "offset"

    def part(suffix: str, size: float, colour: str, **zooms: Any) -> dict[str, Any]:
        return {
            "part": f"label{suffix}", "type": "symbol", **zooms,
            "layout": {
                "text-field": name, "text-font": [FONTSTACK], "text-size": size,
                "text-anchor": "top" if offset else "center", "text-offset": [0, 0.6] if offset else [0, 0],
                "text-max-width": 9, "text-padding": 4,
            },
            "paint": {"text-color": colour, "text-halo-color": BACKGROUND, "text-halo-width": 1.6},
        }

    if "bands" not in spec:
        return [part("", spec["size"], spec["colour"], minzoom=spec["minzoom"])]
    return [{**part(f"-{value}", size, colour, minzoom=low, maxzoom=high), "filter": ["==", ["get", spec["by"]], value]}
            for value, (size, colour, low, high) in spec["bands"].items()]


def _style_layers(layer: Layer, specs: list[dict[str, Any]], *, hidden: bool, lang: str) -> list[dict[str, Any]]:
    visibility = "none" if hidden else "visible"
    out = []
    for spec in specs:
        body = {key: value for key, value in spec.items() if key != "part"}
        if body["type"] == "fill":  # outlines are line layers: no second (antialiasing) pass per fill
            body["paint"] = {**body["paint"], "fill-antialias": False}
        out.append({
            **body,
            "id": f"{layer.id}-{spec['part']}",
            "source": group_of(layer),
            "source-layer": layer.id,
            "minzoom": max(layer.minzoom, body.get("minzoom", 0)),
            "layout": {**body.get("layout", {}), "visibility": visibility},
            "metadata": {"gridwatch:layer": layer.id, "gridwatch:popup": list(layer.popup),
                         "gridwatch:title": layer.title[lang], "gridwatch:live": layer.live},
        })
    return out


def build_style(
    layers: tuple[Layer, ...], *, base_url: str, lang: str = "en", hidden: frozenset[str] | None = None,
    labels: bool = True, basemap_tiles_url: str | None = None,
    bounds: tuple[float, float, float, float] | None = None,
) -> dict[str, Any]:
    """The style of the given (available) catalog layers.

    ``base_url`` is our server's root (``http://host:port``); MapLibre needs
    absolute tile and glyph URLs. ``hidden`` layers start with visibility none
    (by default the catalog's hidden ones). Labels are drawn above every layer, the catalog's first on top.
    ``bounds`` (west, south, east, north) is where the data is: the map asks for
    no tile outside it.
    """
    sources: dict[str, Any] = {}
    for group in TILE_GROUPS:
        members = [layer for layer in layers if group_of(layer) == group]
        if members:
            sources[group] = {"type": "vector", "tiles": [f"{base_url}/tiles/group/{group}/{{z}}/{{x}}/{{y}}.pbf"],
                              "minzoom": min(m.minzoom for m in members), "maxzoom": max(m.maxzoom for m in members)}
            if bounds is not None:
                sources[group]["bounds"] = list(bounds)
    style_layers: list[dict[str, Any]] = [
        {"id": "background", "type": "background", "paint": {"background-color": BACKGROUND}}
    ]
    if basemap_tiles_url:
        sources["basemap"] = {"type": "raster", "tiles": [basemap_tiles_url], "tileSize": 256}
        style_layers.append({"id": "basemap", "type": "raster", "source": "basemap",
                             "paint": {"raster-opacity": 0.45, "raster-saturation": -0.6}})
    label_layers: list[dict[str, Any]] = []
    for layer in layers:
        is_hidden = layer.id in hidden if hidden is not None else not layer.visible
        style_layers += _style_layers(layer, list(layer.styles), hidden=is_hidden, lang=lang)
        if labels:
            label_layers += _style_layers(layer, _labels(layer, lang), hidden=is_hidden, lang=lang)
    # The first catalog layer's labels on top: MapLibre places the top labels first, so where labels
    # collide the command units' names win over the settlements'.
    style_layers += label_layers[::-1]
    style: dict[str, Any] = {"version": 8, "name": "gridwatch", "sources": sources, "layers": style_layers}
    if labels:
        style["glyphs"] = f"{base_url}/glyphs/{{fontstack}}/{{range}}.pbf"
    return style
