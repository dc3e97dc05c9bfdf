"""The wall's map figure: our style for every vector layer, plotly traces for live units.

The traces come in a fixed order so a refresh replaces them one by one with a
``dash.Patch`` (the layout, and with it the style and its tiles, stays put).
All arrays are built with numpy/pandas, never a loop over units.
"""
from __future__ import annotations

import math
from string import Formatter
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from gridwatch.dashboard.i18n import t
from gridwatch.settings import UNIT_KINDS

__all__ = ["KIND_COLOURS", "SILENT_COLOUR", "HALO_COLOURS", "FOUND_COLOUR", "TRACES", "map_figure", "live_traces"]

# One colour, one meaning: no unit colour is a coverage, defence-line or zone colour of the catalog.
KIND_COLOURS = {"foot": "#38bdf8", "vehicle": "#a78bfa", "drone": "#f472b6", "post": "#bef264",
                "checkpoint": "#fdba74"}
TRACES = ("trail", "heading", "halo", "found", "units")
# A silent unit: a black dot in a white ring, whatever its kind (it shows on every coverage fill).
SILENT_COLOUR = "#020617"
HALO_COLOURS = {"responding": "rgba(255,255,255,0.45)", "silent": "rgba(248,250,252,0.95)"}
FOUND_COLOUR = "rgba(34,211,238,0.6)"  # the unit found by its callsign
HEADING_DEG = 0.02  # length of the heading tick, in degrees (~2 km)


def view_of(bounds: tuple[float, float, float, float] | None, *, size_px: tuple[int, int] = (1363, 699)
            ) -> dict[str, object]:
    """Centre and zoom that fit ``bounds`` (lon/lat) into a map of ``size_px`` (Web Mercator).

    The default is the wall's map on a 1920 x 1080 screen (1423 x 759 px) less the 30 px margin the
    page's own fit keeps (``fitBounds`` in ``assets/wall.js``), so the page opens fitted and that fit
    changes nothing.
    """
    if bounds is None:
        return {}
    minx, miny, maxx, maxy = bounds

    def mercator_y(lat: float) -> float:
        return math.log(math.tan(math.pi / 4 + math.radians(lat) / 2))

    span_x = max(maxx - minx, 1e-6) / 360.0
    span_y = max(mercator_y(maxy) - mercator_y(miny), 1e-9) / (2 * math.pi)
    zoom = math.log2(min(size_px[0] / span_x, size_px[1] / span_y) / 512.0)
    return {"center": ((minx + maxx) / 2, (miny + maxy) / 2), "zoom": max(0.0, min(zoom, 16.0))}


def map_figure(style_url: str, *, center: tuple[float, float] = (100.0, 25.0), zoom: float = 3) -> go.Figure:
    """The map with our style and empty live traces; ``uirevision`` keeps the user's view."""
    empty = {"lon": [], "lat": [], "text": []}
    traces = [go.Scattermap(name=name, **empty) for name in TRACES]
    fig = go.Figure(traces)
    fig.update_layout(
        map={"style": style_url, "center": {"lon": center[0], "lat": center[1]}, "zoom": zoom},
        margin={"l": 0, "r": 0, "t": 0, "b": 0}, uirevision="wall", showlegend=False,
        paper_bgcolor="#0b1220", font={"color": "#e2e8f0", "size": 15},
        hoverlabel={"font": {"size": 16}, "bgcolor": "#0f172a"},
    )
    return fig


def _separated(lon: np.ndarray, lat: np.ndarray, groups: np.ndarray) -> tuple[list, list]:
    """Coordinates with a gap (None) wherever ``groups`` changes: one line per group."""
    breaks = np.flatnonzero(groups[1:] != groups[:-1]) + 1
    lon = np.insert(lon.astype(object), breaks, None)
    lat = np.insert(lat.astype(object), breaks, None)
    return lon.tolist(), lat.tolist()


def _fill(template: str, **values: pd.Series) -> pd.Series:
    """``template`` (an i18n string) filled column-wise from string Series of one index."""
    index = next(iter(values.values())).index
    out = pd.Series("", index=index, dtype=object)
    for literal, field, _spec, _conv in Formatter().parse(template):
        out = out + literal
        if field is not None:
            out = out + values[field]
    return out


def _age(seconds: pd.Series, *, lang: str) -> pd.Series:
    """Ages as "N s", "N min" or "N h", by size."""
    s = seconds.clip(lower=0).fillna(0)
    ages = _fill(t("age_h", lang, n="{n}"), n=(s // 3600).astype(int).astype(str))
    ages = ages.where(s >= 3600, _fill(t("age_m", lang, n="{n}"), n=(s // 60).astype(int).astype(str)))
    return ages.where(s >= 60, _fill(t("age_s", lang, n="{n}"), n=s.astype(int).astype(str)))


def _hover(units: pd.DataFrame, *, lang: str, timezone: str, now: pd.Timestamp) -> pd.Series:
    """Callsign and kind; status (silent first), speed, age of the fix and its local time."""
    ts = pd.to_datetime(units["ts"], utc=True)
    local = ts.dt.tz_convert(timezone).dt.strftime("%H:%M:%S")
    kinds = units["kind"].map({kind: t(f"kind_{kind}", lang) for kind in UNIT_KINDS}).fillna(units["kind"])
    status = units["status"].map({s: t(f"status_{s}", lang) for s in ("on_duty", "responding")}).fillna(units["status"])
    status = status.where(~units["silent"].astype(bool), t("silent", lang))
    speed = pd.to_numeric(units["speed"], errors="coerce")
    speeds = _fill(t("speed_kmh", lang, v="{v}"), v=speed.fillna(0).round().astype(int).astype(str))
    speeds = speeds.where(speed.notna(), t("speed_unknown", lang))
    age = _age((now - ts).dt.total_seconds(), lang=lang)
    # no <b>: plotly draws it with a style attribute, which the page's security policy refuses
    return (units["callsign"] + " · " + kinds + "<br>"
            + _fill(t("unit_tooltip", lang, status="{status}", speed="{speed}", age="{age}"),
                    status=status, speed=speeds, age=age) + " (" + local + ")")


def live_traces(
    units: pd.DataFrame, trail: pd.DataFrame | None, *, lang: str, timezone: str, found: str | None = None,
    now: pd.Timestamp | None = None, scale: float = 1.0,
) -> list[dict[str, Any]]:
    """The live traces, in :data:`TRACES` order, for units and their trails.

    The unit with the callsign ``found`` gets a ring; ``now`` (default: the clock) dates the fixes'
    ages in the tooltips; marker sizes and line widths are times ``scale`` (larger screens). Each marker's ``customdata`` is its callsign and its legend class (its kind,
    or ``silent``).

    ``trail=None`` leaves out the trails and the heading ticks (too many units to draw them legibly).
    Colours and sizes are per-unit arrays, so every unit is in one markers trace: each trace is four
    more map sources to create when the page opens and to update every refresh.
    """
    if trail is None:
        trail_lon, trail_lat = [], []
    else:
        trail_lon, trail_lat = _separated(trail["lon"].to_numpy(), trail["lat"].to_numpy(),
                                          trail["unit_id"].to_numpy())
    heading = np.radians(units["heading"].fillna(0).to_numpy(dtype=float))
    lon, lat = units["lon"].to_numpy(dtype=float), units["lat"].to_numpy(dtype=float)
    has_heading = units["heading"].notna().to_numpy() & (trail is not None)
    tick_lon = np.column_stack([lon, lon + HEADING_DEG * np.sin(heading) / np.cos(np.radians(lat)),
                                np.full(len(lon), np.nan)])[has_heading].ravel()
    tick_lat = np.column_stack([lat, lat + HEADING_DEG * np.cos(heading), np.full(len(lat), np.nan)])[has_heading].ravel()
    tick_lon, tick_lat = np.round(tick_lon, 4), np.round(tick_lat, 4)

    silent = units["silent"].to_numpy(dtype=bool)
    responding = (units["status"] == "responding").to_numpy()
    halo = silent | responding
    classes = np.where(silent, "silent", units["kind"].to_numpy(dtype=object))
    colours = pd.Series(classes).map({**KIND_COLOURS, "silent": SILENT_COLOUR}).fillna(SILENT_COLOUR).to_numpy()
    is_found = (units["callsign"] == found).to_numpy()
    now = pd.Timestamp.now(tz="UTC") if now is None else now
    return [
        {"type": "scattermap", "name": "trail", "mode": "lines", "lon": trail_lon, "lat": trail_lat,
         "line": {"color": "rgba(226,232,240,0.55)", "width": 2 * scale}, "hoverinfo": "skip"},
        {"type": "scattermap", "name": "heading", "mode": "lines",
         "lon": np.where(np.isnan(tick_lon), None, tick_lon).tolist(),
         "lat": np.where(np.isnan(tick_lat), None, tick_lat).tolist(),
         "line": {"color": "#f8fafc", "width": 2.5 * scale}, "hoverinfo": "skip"},
        {"type": "scattermap", "name": "halo", "mode": "markers", "lon": lon[halo].tolist(),
         "lat": lat[halo].tolist(), "hoverinfo": "skip",
         "marker": {"size": (np.where(silent, 26, 24)[halo] * scale).tolist(),
                    "color": np.where(silent, HALO_COLOURS["silent"], HALO_COLOURS["responding"])[halo].tolist()}},
        {"type": "scattermap", "name": "found", "mode": "markers", "lon": lon[is_found].tolist(),
         "lat": lat[is_found].tolist(), "hoverinfo": "skip", "marker": {"size": 44 * scale, "color": FOUND_COLOUR}},
        {"type": "scattermap", "name": "units", "mode": "markers", "lon": lon.tolist(), "lat": lat.tolist(),
         "marker": {"size": 13 * scale, "color": colours.tolist()},
         "customdata": np.column_stack([units["callsign"].to_numpy(dtype=object), classes]).tolist(),
         "text": _hover(units, lang=lang, timezone=timezone, now=now).tolist(),
         "hovertemplate": "%{text}<extra></extra>"},
    ]
