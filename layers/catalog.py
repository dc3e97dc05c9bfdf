"""The map-layer catalog: every vector layer the map can show, declared as data.

Tiles (:mod:`gridwatch.layers.tiles`), the style (:mod:`gridwatch.layers.style`), the layer toggles
and the hover panel of the wall all read this table. Only catalogued ids are
served; an id is looked up here and never put into SQL.

Each source is a fixed SELECT over the schema producing ``id``, ``geom``
(EPSG:4326) and the property columns; geometry a source would otherwise compute
per request (a sensor's coverage, a unit's label point) is stored, GiST-indexed,
so the tiles' ``geom && envelope`` uses an index. A layer whose ``requires``
tables are missing (a later migration) is left out by :func:`available_layers`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa

__all__ = [
    "Layer", "CATALOG", "UnknownLayerError", "get_layer", "available_layers", "PRESENT_TABLES", "with_tables",
    "Swatch", "COVERAGE_COLOURS", "SEGMENT_COLOURS", "LINE_COLOURS", "SEVERITY_COLOURS",
]

GeometryKind = Literal["point", "line", "polygon"]
Group = Literal["boundaries", "coverage", "defence", "base", "events"]

# Colours shared by the style, the legend and the KPI strip; one colour means one thing. ``unknown`` is a
# place with no visit within the look-back window (``settings.coverage_lookback_h``): past overdue, darker.
COVERAGE_COLOURS = {"fresh": "#22c55e", "due": "#facc15", "overdue": "#ef4444", "unknown": "#991b1b"}
SEGMENT_COLOURS = {"patrolled": COVERAGE_COLOURS["fresh"], "watched": "#2dd4bf",
                   "overdue": COVERAGE_COLOURS["overdue"], "unknown": COVERAGE_COLOURS["unknown"]}
LINE_COLOURS = {1: "#e879f9", 2: "#fb923c", 3: "#93c5fd"}
# Incidents are the brightest marks on the map, brighter (and larger) the more severe (4 the most), in
# greys no coverage, line, zone or unit colour uses; a closed one fades for the 24 h it stays.
SEVERITY_COLOURS = {1: "#94a3b8", 2: "#cbd5e1", 3: "#e2e8f0", 4: "#ffffff"}
CLOSED_INCIDENT_COLOUR = "rgba(71, 85, 105, 0.5)"
ZONE_COLOURS = {"border_closed": "#a855f7", "port_control": "#0ea5e9"}  # other kinds: outline only


_TABLE_NAME = re.compile(r"\b(?:FROM|JOIN)\s+([a-z_]+)\b(?!\s*\()")


class UnknownLayerError(LookupError):
    """A layer id that is not in the catalog (or whose table does not exist yet)."""


def _match(prop: str, colours: dict[Any, str], default: str) -> list:
    """A MapLibre ``match`` expression mapping a property's values to colours."""
    pairs = [item for key, colour in colours.items() for item in (key, colour)]
    return ["match", ["get", prop], *pairs, default]


@dataclass(frozen=True)
class Swatch:
    """One legend key: the style part ``part`` paints ``colour`` through ``paint`` for the features
    whose ``prop`` is ``value`` (``prop`` None: every feature of the part). ``label`` is its string key
    (:mod:`gridwatch.dashboard.i18n`); ``shape`` is how the key is drawn (``box``, ``bar``, ``dot``)."""

    part: str
    paint: str
    colour: str
    label: str
    shape: str
    prop: str | None = None
    value: Any = None


def _swatches(part: str, paint: str, prop: str, colours: dict[Any, str], labels: dict[Any, str], *, shape: str
              ) -> tuple[Swatch, ...]:
    """The legend keys of a ``match`` on ``prop`` over ``colours`` (as :func:`_match` paints it), in
    the order of ``labels``."""
    return tuple(Swatch(part, paint, colours[value], label, shape, prop, value) for value, label in labels.items())


_COVERAGE_LABELS = {"fresh": "fresh", "due": "due", "overdue": "overdue", "unknown": "no_visit"}
_SEGMENT_LABELS = {"patrolled": "patrolled", "watched": "watched", "overdue": "overdue", "unknown": "no_visit"}
# A place's class on the map: its coverage status, or ``unknown`` with no visit in the look-back window.
_STATUS = ("CASE WHEN c.last_visit IS NULL AND c.status = 'overdue' THEN 'unknown' "
           "ELSE coalesce(c.status, 'unknown') END AS status")


def _parts_by(prop: str, specs: dict[str, dict[str, Any]], default: dict[str, Any], **common: Any
              ) -> tuple[dict[str, Any], ...]:
    """One style part per value of ``prop`` (and one for every other value), each with constant paint.

    Constant paint keeps a layer on the shader its type already uses: each distinct set of
    feature-driven paint properties is one more program to compile when the map opens.
    """
    parts = [{"part": f"{common['type']}-{value}", "filter": ["==", ["get", prop], value],
              **common, "paint": paint} for value, paint in specs.items()]
    rest = ["!", ["in", ["get", prop], ["literal", list(specs)]]]
    return (*parts, {"part": common["type"], "filter": rest, **common, "paint": default})


@dataclass(frozen=True)
class Layer:
    """One map layer: where its features come from and how they are drawn.

    ``styles`` are MapLibre style-layer specs without ``id``/``source``; each has
    an ``"id"`` suffix under the key ``"part"``. ``popup`` names the properties
    the hover panel shows (each labelled by the string ``field_<name>``); ``legend`` the keys the
    wall's legend draws, from the same colours as the styles. ``label`` names the features: one text
    ``size`` and ``colour`` from ``minzoom``, or, with ``by`` (a property) and ``bands`` (its value ->
    size, colour, minzoom, maxzoom), a label part per value. ``live`` layers are refetched every refresh. The source's rows
    change only with a write to its :attr:`tables`, and, when ``time_key`` (an SQL
    expression) is given, when its value changes: rows that leave the source by time alone.
    """

    id: str
    title: dict[str, str]
    source: str
    kind: GeometryKind
    styles: tuple[dict[str, Any], ...]
    group: Group
    minzoom: int = 0
    maxzoom: int = 14
    popup: tuple[str, ...] = ()
    live: bool = False
    visible: bool = True
    requires: tuple[str, ...] = ()
    label: dict[str, Any] | None = None
    time_key: str | None = None
    legend: tuple[Swatch, ...] = ()

    @property
    def tables(self) -> tuple[str, ...]:
        """The tables the source reads."""
        return tuple(sorted(set(_TABLE_NAME.findall(self.source))))


def _level(level: str, colour: str, width: float, minzoom: int, dash: list | None = None) -> Layer:
    paint: dict[str, Any] = {"line-color": colour, "line-width": width, "line-opacity": 0.9}
    if dash:
        paint["line-dasharray"] = dash
    titles = {
        "prefecture": ("Prefecture", "地区"), "county": ("Counties", "县"),
        "township": ("Townships", "乡镇"), "station": ("Stations", "派出所/边境派出所"),
    }[level]
    return Layer(
        id=f"cu_{level}",
        title={"en": titles[0], "zh": titles[1]},
        source=(
            "SELECT id, code, name, coalesce(name_en, name) AS name_en, level, geom "
            f"FROM command_unit WHERE level = '{level}'"
        ),
        kind="polygon",
        styles=({"part": "line", "type": "line", "paint": paint, "layout": {"line-join": "round"}},),
        group="boundaries",
        minzoom=minzoom,
        popup=("name", "code", "level"),
    )


_INCIDENT_KEPT = "interval '24 hours'"  # how long a closed incident stays on the map

CATALOG: tuple[Layer, ...] = (
    Layer(
        id="zones", title={"en": "Zones", "zh": "管控区域"},
        source="SELECT id, kind, name, geom FROM zone", kind="polygon", group="base",
        styles=(
            {"part": "fill", "type": "fill", "filter": ["in", ["get", "kind"], ["literal", list(ZONE_COLOURS)]],
             "paint": {"fill-color": _match("kind", ZONE_COLOURS, "#1e293b"), "fill-opacity": 0.18}},
            *_parts_by("kind", {kind: {"line-color": colour, "line-width": 1, "line-dasharray": [3, 2]}
                                for kind, colour in ZONE_COLOURS.items()},
                       {"line-color": "#334155", "line-width": 1, "line-dasharray": [3, 2]}, type="line"),
        ),
        popup=("kind", "name"),
    ),
    Layer(
        id="grids", title={"en": "Grids by coverage", "zh": "网格覆盖"},
        source=(
            f"SELECT g.id, g.code, g.name, {_STATUS}, c.limit_h, "
            "to_char(c.last_visit AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI\"Z\"') AS last_visit, "
            "g.households, g.geom FROM grid g LEFT JOIN grid_coverage c ON c.grid_id = g.id"
        ),
        # From zoom 7: a province's fitted view; a zoom-6 tile would hold ~24k grids.
        kind="polygon", group="coverage", minzoom=7, live=True,
        styles=(
            {"part": "fill", "type": "fill", "paint": {
                "fill-color": _match("status", COVERAGE_COLOURS, COVERAGE_COLOURS["unknown"]),
                "fill-opacity": 0.32}},
            {"part": "line", "type": "line", "minzoom": 9, "paint": {"line-color": "#0f172a", "line-width": 0.6}},
        ),
        popup=("name", "code", "limit_h", "last_visit", "status", "households"),
        legend=_swatches("fill", "fill-color", "status", COVERAGE_COLOURS, _COVERAGE_LABELS, shape="box"),
    ),
    Layer(
        id="hexes", title={"en": "H3 coverage", "zh": "H3 覆盖"},
        source=(
            "SELECT h3 AS id, status, to_char(last_visit AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI\"Z\"') "
            "AS last_visit, visits_24h, geom FROM hex_coverage"
        ),
        kind="polygon", group="coverage", minzoom=9, live=True, visible=False,
        styles=(
            {"part": "fill", "type": "fill", "paint": {
                "fill-color": _match("status", COVERAGE_COLOURS, COVERAGE_COLOURS["unknown"]),
                "fill-opacity": 0.4}},
        ),
        popup=("status", "last_visit", "visits_24h"),
    ),
    Layer(
        id="sensors", title={"en": "Sensor range", "zh": "传感器范围"},
        source="SELECT id, code, kind, up, range_m, fov_deg, coverage AS geom FROM sensor",
        kind="polygon", group="defence", minzoom=8,
        styles=(
            {"part": "fill", "type": "fill", "paint": {
                "fill-color": ["case", ["!", ["get", "up"]], "#64748b",
                               _match("kind", {"camera": "#c084fc", "radar": "#2dd4bf"}, "#94a3b8")],
                "fill-opacity": 0.18}},
            {"part": "line", "type": "line", "paint": {
                "line-color": ["case", ["!", ["get", "up"]], "rgba(100, 116, 139, 0.5)",
                               _match("kind", {"camera": "#c084fc", "radar": "#2dd4bf"}, "#94a3b8")],
                "line-width": 1, "line-opacity": 0.8}},
        ),
        popup=("code", "kind", "range_m", "up"),
    ),
    Layer(
        id="rivers", title={"en": "Rivers", "zh": "河流"},
        source="SELECT id, name, geom FROM river", kind="line", group="base",
        styles=({"part": "line", "type": "line", "paint": {"line-color": "#0284c7", "line-width": 1.6}},),
        popup=("name",),
    ),
    Layer(
        id="roads", title={"en": "Roads", "zh": "道路"},
        source="SELECT id, code, class, name, geom FROM road", kind="line", group="base", minzoom=6,
        styles=_parts_by(
            "class", {name: {"line-color": colour, "line-width": width, "line-opacity": 0.85}
                      for name, colour, width in (("trunk", "#e5e7eb", 2.6), ("secondary", "#9ca3af", 1.6),
                                                  ("track", "#78716c", 1.0), ("patrol", "#22d3ee", 1.4))},
            {"line-color": "#6b7280", "line-width": 1.0, "line-opacity": 0.85},
            type="line", layout={"line-join": "round"}),
        popup=("class", "name", "code"),
    ),
    _level("station", "#64748b", 0.8, 9, [2, 2]),
    _level("township", "#94a3b8", 1.2, 7, [4, 2]),
    _level("county", "#cbd5e1", 2.2, 0),
    _level("prefecture", "#f8fafc", 3.2, 0),
    Layer(
        id="lines", title={"en": "Defence lines", "zh": "三道防线"},
        source="SELECT id, line_no, name, geom FROM defence_line", kind="line", group="defence",
        styles=tuple(
            {"part": f"line{n}", "type": "line", "filter": ["==", ["get", "line_no"], n],
             "layout": {"line-join": "round", "line-cap": "butt" if dash else "round"},
             "paint": {"line-color": LINE_COLOURS[n], "line-width": width, "line-opacity": 0.9,
                       **({"line-dasharray": dash} if dash else {})}}
            for n, width, dash in ((1, 5, None), (2, 3.5, [3, 1.5]), (3, 3.5, [1, 1.2]))
        ),
        popup=("line_no", "name"),
        legend=tuple(Swatch(f"line{n}", "line-color", colour, f"line_{n}", "bar") for n, colour in LINE_COLOURS.items()),
    ),
    Layer(
        id="segments", title={"en": "Border segments", "zh": "边境分段"},
        source=(
            "SELECT s.id, round(s.km_from::numeric, 1) AS km_from, round(s.km_to::numeric, 1) AS km_to, "
            f"{_STATUS}, c.limit_h, "
            "to_char(c.last_visit AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI\"Z\"') AS last_visit, s.geom "
            "FROM border_segment s LEFT JOIN segment_coverage c ON c.segment_id = s.id"
        ),
        kind="line", group="coverage", minzoom=5, live=True,
        styles=({"part": "line", "type": "line", "layout": {"line-cap": "butt"}, "paint": {
            "line-color": _match("status", SEGMENT_COLOURS, SEGMENT_COLOURS["unknown"]),
            "line-width": ["interpolate", ["linear"], ["zoom"], 6, 3, 12, 7]}},),
        popup=("km_from", "km_to", "limit_h", "last_visit", "status"),
        legend=_swatches("line", "line-color", "status", SEGMENT_COLOURS, _SEGMENT_LABELS, shape="bar"),
    ),
    Layer(
        id="leak_routes", title={"en": "Leak routes", "zh": "漏管通道"},
        source="SELECT id, line_no, round(length_m) AS length_m, geom FROM leak_route",
        kind="line", group="defence", requires=("leak_route",), live=True,
        styles=({"part": "line", "type": "line", "paint": {
            "line-color": "#f43f5e", "line-width": 2.5, "line-dasharray": [1, 1]}},),
        popup=("line_no", "length_m"),
    ),
    Layer(
        id="unit_names", title={"en": "Place names (command units)", "zh": "辖区名称"},
        source=(
            "SELECT id, code, name, coalesce(name_en, name) AS name_en, level, label_point AS geom "
            "FROM command_unit"
        ),
        kind="point", group="boundaries", styles=(),
        popup=("name", "code", "level"),
        label={
            # Each level names itself only in its own zoom band, one label part per level with constant
            # size and colour: the map lays out only the level its zoom shows, on the plainest text shader.
            "by": "level", "bands": {"prefecture": (22, "#f8fafc", 0, 7), "county": (18, "#f1f5f9", 7, 9.5),
                                     "township": (15, "#cbd5e1", 9.5, 11.5), "station": (13, "#94a3b8", 11.5, 24)},
            "placement": "center", "minzoom": 0,
        },
    ),
    Layer(
        id="settlements", title={"en": "Settlements", "zh": "居民点"},
        source="SELECT id, code, name, coalesce(name_en, name) AS name_en, kind, households, geom FROM settlement",
        kind="point", group="base", minzoom=7,
        styles=({"part": "dot", "type": "circle", "paint": {
            "circle-radius": _match("kind", {"seat": 6, "town": 4.5}, 3),
            "circle-color": "#94a3b8", "circle-stroke-color": "#0b1220", "circle-stroke-width": 1.2}},),
        popup=("name", "kind", "households"),
        label={"size": 13, "colour": "#e2e8f0", "placement": "offset", "minzoom": 10},
    ),
    Layer(
        id="checkpoints", title={"en": "Checkpoints", "zh": "检查站"},
        source="SELECT id, code, line_no, name, kind, staffed, geom FROM checkpoint",
        kind="point", group="defence", minzoom=5,
        styles=({"part": "dot", "type": "circle", "paint": {
            "circle-radius": ["interpolate", ["linear"], ["zoom"], 6, 4, 12, 9],
            "circle-color": ["case", ["get", "staffed"], _match("line_no", LINE_COLOURS, "#ffffff"), "#0b1220"],
            "circle-stroke-color": _match("line_no", LINE_COLOURS, "#ffffff"),
            "circle-stroke-width": ["case", ["get", "staffed"], 1.5, 3]}},),
        popup=("code", "name", "line_no", "staffed"),
    ),
    Layer(
        id="incidents", title={"en": "Incidents", "zh": "警情"},
        source="SELECT id, source_id, kind, severity, status, "
               "to_char(reported_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI\"Z\"') AS reported_at, geom "
               f"FROM incident WHERE status <> 'closed' OR closed_at > now() - {_INCIDENT_KEPT}",
        kind="point", group="events", live=True,
        # the oldest closed incident still shown: it leaves the layer when its 24 hours are up
        time_key=f"(SELECT min(closed_at) FROM incident WHERE closed_at > now() - {_INCIDENT_KEPT})",
        styles=({"part": "dot", "type": "circle", "paint": {
            "circle-radius": ["interpolate", ["linear"], ["zoom"], 6, ["+", 3, ["get", "severity"]],
                              13, ["+", 6, ["*", 2, ["get", "severity"]]]],
            "circle-color": ["case", ["==", ["get", "status"], "closed"], CLOSED_INCIDENT_COLOUR,
                             _match("severity", SEVERITY_COLOURS, "#ffffff")],
            "circle-opacity": 0.95,
            "circle-stroke-color": "#0b1220",
            "circle-stroke-width": 1.5}},),
        popup=("kind", "severity", "status", "reported_at"),
        legend=(*_swatches("dot", "circle-color", "severity", SEVERITY_COLOURS,
                           {n: f"severity_key_{n}" for n in sorted(SEVERITY_COLOURS, reverse=True)}, shape="dot"),
                Swatch("dot", "circle-color", CLOSED_INCIDENT_COLOUR, "incident_closed_key", "dot", "status", "closed")),
    ),
)

_BY_ID = {layer.id: layer for layer in CATALOG}


def get_layer(layer_id: str) -> Layer:
    """The catalogued layer called ``layer_id``; :class:`UnknownLayerError` otherwise."""
    try:
        return _BY_ID[layer_id]
    except (KeyError, TypeError):
        raise UnknownLayerError(
            f"map layer {layer_id!r} is not in the catalog; expected one of {sorted(_BY_ID)}"
        ) from None


def available_layers(engine: sa.Engine) -> tuple[Layer, ...]:
    """The catalog without the layers whose required tables do not exist in this database."""
    needed = sorted({table for layer in CATALOG for table in layer.requires})
    if not needed:
        return CATALOG
    with engine.connect() as conn:
        present = conn.execute(sa.text(f"SELECT {PRESENT_TABLES}"), {"required": needed}).scalar()
    return with_tables(CATALOG, present)


# Which of the tables named by the parameter ``required`` (a text array) exist, as a text array.
PRESENT_TABLES = "ARRAY(SELECT t FROM unnest(CAST(:required AS text[])) AS t WHERE to_regclass(t) IS NOT NULL)"


def with_tables(layers: tuple[Layer, ...], present: list[str]) -> tuple[Layer, ...]:
    """The ``layers`` whose required tables are all ``present``."""
    return tuple(layer for layer in layers if set(layer.requires) <= set(present))
