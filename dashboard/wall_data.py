"""What the wall's callbacks return, as plain functions of the app context.

A database error never escapes: the live update turns it into the
"database unreachable" banner and keeps the last picture; the slow update
keeps the last figures. Both recover by themselves on the next tick.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import dash

from gridwatch.dashboard._context import DB_ERRORS, WallContext
from gridwatch.dashboard.live_map import live_traces
from gridwatch.dashboard.wall_panels import banner, kpi_strip, layer_options, local_time, scope_options
from gridwatch.layers.catalog import available_layers
from gridwatch.layers.queries import (
    CommandUnit,
    UnknownCommandUnitError,
    command_unit,
    command_unit_tree,
    data_status,
    feed_trouble,
    jurisdiction_bounds,
    kpis,
    live_units,
    trails,
)

__all__ = ["TRAIL_MINUTES", "DETAIL_MAX_UNITS", "LiveUpdate", "SlowUpdate", "live_update", "slow_update", "selected_unit", "scope_id",
           "start_bounds", "unit_options"]
TRAIL_MINUTES = 10.0
# Trails and heading ticks only when the scope has at most this many units: past it (a whole province,
# ~20k units) the map is fitted so far out that a ten-minute trail is a few pixels, and reading and
# sending them would take most of the refresh (20k units: ~320 ms and ~950 KB of ~1.9 MB).
DETAIL_MAX_UNITS = 2_000


def scope_id(ctx: WallContext, code: str | None) -> int | None:
    """The id of the command unit ``code``, the ``scope`` of the read queries (None: everything)."""
    unit = selected_unit(ctx, code)
    return unit.id if unit else None


def selected_unit(ctx: WallContext, code: str | None) -> CommandUnit | None:
    """The selected command unit; None (everything) when unset or unknown."""
    if not code:
        return None
    try:
        return command_unit(ctx.engine, code)
    except UnknownCommandUnitError:
        return None


@dataclass(frozen=True)
class LiveUpdate:
    """The live traces (None: keep the last ones), the banner (text, class) and when the picture
    was read (epoch milliseconds; None: never)."""

    traces: list[dict[str, Any]] | None
    banner: tuple[str, str]
    read_at_ms: float | None = None

    def patch(self) -> Any:
        """A Patch replacing the live traces only (layout, style and tiles stay)."""
        if self.traces is None:
            return dash.no_update
        patched = dash.Patch()
        for index, trace in enumerate(self.traces):
            patched["data"][index] = trace
        return patched


def _live_reads(ctx: WallContext, code: str | None) -> tuple:
    scope = scope_id(ctx, code)
    units = live_units(ctx.engine, ctx.settings, scope=scope)
    trail = trails(ctx.engine, minutes=TRAIL_MINUTES, scope=scope) if len(units) <= DETAIL_MAX_UNITS else None
    return units, trail, data_status(ctx.engine, ctx.settings), feed_trouble(ctx.engine, ctx.settings)


def live_update(ctx: WallContext, code: str | None, *, lang: str, found: str | None = None,
                scale: float = 1.0) -> LiveUpdate:
    """Units, trails and the data banner for the scope ``code`` (trails and ticks up to :data:`DETAIL_MAX_UNITS`),
    the unit with the callsign ``found`` ringed, markers drawn ``scale`` times their size at 1080 lines.

    While the database is away: the last known units, and a banner saying since when they are shown.
    """
    try:
        known = ctx.known.read(("live", code), lambda: _live_reads(ctx, code))
    except DB_ERRORS:
        return LiveUpdate(None, banner("db_nothing", lang=lang))
    units, trail, status, feed = known.value
    traces = live_traces(units, trail, lang=lang, timezone=ctx.settings.timezone, found=found, scale=scale)
    tz = ctx.settings.timezone
    read_at = known.at.timestamp() * 1000
    if not known.fresh:
        return LiveUpdate(traces, banner("db_kept", lang=lang, since=local_time(known.at, tz, "%H:%M:%S")), read_at)
    if feed is not None:
        return LiveUpdate(traces, banner(f"feed_{feed.kind}", lang=lang, since=local_time(feed.since, tz, "%H:%M:%S"),
                                         backlog=f"{feed.backlog:,}", error=feed.last_error or "—"), read_at)
    if status.empty:
        return LiveUpdate(traces, banner("empty", lang=lang), read_at)
    if status.stale:
        return LiveUpdate(traces, banner("stale", lang=lang, since=local_time(status.newest_fix, tz)), read_at)
    return LiveUpdate(traces, banner(None, lang=lang), read_at)


def unit_options(ctx: WallContext, *, lang: str, within: str | None) -> list[dict[str, str]]:
    """The drill-down options within a unit (the last known ones while the database is away, else none)."""
    try:
        return scope_options(ctx.known.read("tree", lambda: command_unit_tree(ctx.engine)).value, lang=lang,
                             within=within)
    except DB_ERRORS:
        return []


def start_bounds(ctx: WallContext, unit: str | None) -> tuple[float, float, float, float] | None:
    """Where the map opens: the unit in the URL, else the whole jurisdiction (None when unknown)."""
    def bounds() -> tuple[float, float, float, float] | None:
        if unit:
            try:
                return command_unit(ctx.engine, unit).bounds
            except UnknownCommandUnitError:
                pass
        return jurisdiction_bounds(ctx.engine)

    try:
        return ctx.known.read(("bounds", unit), bounds).value
    except DB_ERRORS:
        return None


@dataclass(frozen=True)
class SlowUpdate:
    """KPI strip, drill-down options, the bounds to fit, the layer toggles and the callsigns to find."""

    kpis: list
    scope_options: list[dict[str, str]]
    bounds: list[float] | None
    layer_options: list[dict[str, str]]
    callsigns: list[str]


def slow_update(ctx: WallContext, code: str | None, *, lang: str, within: str | None) -> SlowUpdate | None:
    """The minute-scale parts of the wall (the last known ones while the database is away); None
    when the database is away and they were never read."""
    def reads() -> tuple:
        unit = selected_unit(ctx, code)
        bounds = unit.bounds if unit else jurisdiction_bounds(ctx.engine)
        scope = unit.id if unit else None
        figures = kpis(ctx.engine, ctx.settings, scope=scope)
        callsigns = live_units(ctx.engine, ctx.settings, scope=scope)["callsign"].sort_values().tolist()
        return bounds, figures, command_unit_tree(ctx.engine), available_layers(ctx.engine), callsigns

    try:
        bounds, figures, tree, layers, callsigns = ctx.known.read(("slow", code), reads).value
    except DB_ERRORS:
        return None
    return SlowUpdate(
        kpis=kpi_strip(figures, lang=lang, timezone=ctx.settings.timezone,
                       lookback_h=ctx.settings.coverage_lookback_h),
        scope_options=scope_options(tree, lang=lang, within=within),
        bounds=list(bounds) if bounds else None,
        layer_options=layer_options(layers, lang=lang),
        callsigns=callsigns,
    )
