"""What the dispatcher page's callbacks return, as plain functions of the app context.

A database error never escapes: each function returns None (keep the last
picture) or, for the live units, the "database unreachable" banner, like the wall.
"""
from __future__ import annotations

import hashlib
import json
import tempfile
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pandas as pd
from dash import html
from plotly.utils import PlotlyJSONEncoder

from gridwatch.dashboard._context import DB_ERRORS, WallContext
from gridwatch.dashboard.dispatch_panels import (
    alert_list,
    nearest_table,
    route_bounds,
    route_traces,
    target_table,
    track_trace,
    units_trace,
)
from gridwatch.dashboard.i18n import t
from gridwatch.dashboard.shift_report import shift_report
from gridwatch.dashboard.wall_data import scope_id
from gridwatch.dashboard.wall_panels import banner, local_time
from gridwatch.errors import GridwatchError
from gridwatch.etl.alerts import acknowledge_all, refresh_alerts
from gridwatch.layers.alerts import alerts_at, alerts_in_scope
from gridwatch.layers.evidence import export_evidence, position_counts, read_layer, window
from gridwatch.layers.gaps import gap_list, open_incidents
from gridwatch.layers.nearest import nearest_units, road_graph
from gridwatch.layers.queries import command_unit_tree, data_status, live_units
from gridwatch.layers.replay import positions_at, situation, track, unit_roster

__all__ = ["moment", "evidence_file", "targets_update", "NearestUpdate", "nearest_update",
           "warm_routes", "alerts_update", "panel_digest", "acknowledge_alerts", "UnitsUpdate", "units_update",
           "ALL_UNITS", "ReplayUpdate", "replay_update", "unit_choices"]

ALL_UNITS = "all"  # the replay choice of the whole situation: every unit


def moment(minutes_back: int | None) -> datetime | None:
    """The time slider's moment: None for now (live), else that many minutes ago."""
    return None if not minutes_back else datetime.now(timezone.utc) - timedelta(minutes=abs(minutes_back))


def evidence_file(ctx: WallContext, *, kind: str, unit: str | None, at: datetime | None, lang: str
                  ) -> tuple[bytes, str] | str:
    """The evidence GeoPackage (``kind="gpkg"``) or shift report PDF (``"pdf"``) of command unit ``unit``
    (None: the top one) over the shift ending at ``at`` (None: now), with its file name; or the
    message that says why there is none (the database away, nothing in the window)."""
    end = at or datetime.now(timezone.utc)
    try:
        tree = command_unit_tree(ctx.engine)
        if tree.empty:
            return t("export_failed", lang, reason=t("export_empty", lang))
        code = unit or str(tree["code"].iloc[0])
        win = window(ctx.engine, code, end - timedelta(hours=ctx.settings.shift_hours), end)
        if position_counts(ctx.engine, win)[0] == 0 and read_layer(ctx.engine, win, "incidents").empty \
                and read_layer(ctx.engine, win, "alerts").empty:
            return t("export_failed", lang, reason=t("export_empty", lang))
        stem = f"{code}-{local_time(end, ctx.settings.timezone, '%Y%m%d-%H%M')}"
        if kind == "pdf":
            return shift_report(ctx.engine, win, settings=ctx.settings, lang=lang), f"shift-report-{stem}.pdf"
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / f"evidence-{stem}.gpkg"
            export_evidence(ctx.engine, win, path)
            return path.read_bytes(), path.name
    except DB_ERRORS:
        return t("export_failed", lang, reason=t("export_db", lang))
    except GridwatchError as exc:
        return t("export_failed", lang, reason=str(exc))


def targets_update(ctx: WallContext, *, mode: str, unit: str | None, zone_kind: str | None, lang: str
                   ) -> dict[str, Any] | None:
    """The list (``target_table``) of gaps (``mode="gaps"``) or open incidents in command unit ``unit``;
    None while the database is down."""
    now = datetime.now(timezone.utc)
    try:
        if mode == "gaps":
            frame = gap_list(ctx.engine, ctx.settings, now=now, unit=unit, zone_kind=zone_kind)
        else:
            frame = open_incidents(ctx.engine, unit=unit)
    except DB_ERRORS:
        return None
    return target_table(frame, mode=mode, lang=lang, timezone=ctx.settings.timezone, now=now,
                        lookback_h=ctx.settings.coverage_lookback_h)


TARGET_PAD_DEG = 0.01  # ~1 km of context around the gap, the unit and the route when the map is fitted to them


@dataclass(frozen=True)
class NearestUpdate:
    """The nearest-units panel, the routes kept for re-selection, traces TRACES[2:5], and the map's new
    bounds (the target, the chosen unit and its route; None: keep the view)."""

    panel: Any
    ranked: list[dict[str, Any]]
    traces: list[dict[str, Any]]
    fit: list[float] | None


def nearest_update(ctx: WallContext, target: dict[str, Any] | None, *, lang: str, unit: str | None,
                   ranked: list[dict[str, Any]] | None = None, chosen: int = 0) -> NearestUpdate | None:
    """Rank the units of command unit ``unit`` (None: all) for ``target`` (or re-use ``ranked`` to choose
    another route); None when the db is down."""
    if not target:
        return NearestUpdate(_note(t("nearest_pick", lang)), [], route_traces(None, _empty_ranking(), 0), None)
    if ranked is None:
        try:
            frame = nearest_units(ctx.engine, ctx.settings, (target["lon"], target["lat"]), scope=scope_id(ctx, unit))
        except DB_ERRORS:
            return None
        ranked = frame[["unit_id", "callsign", "kind", "lon", "lat", "eta_s", "via", "route_m", "route"]].to_dict(
            "records")
    frame = pd.DataFrame(ranked) if ranked else _empty_ranking()
    panel = [_note(t("nearest_for", lang, target=target["label"])), nearest_table(frame, chosen=chosen, lang=lang)]
    return NearestUpdate(panel, ranked, route_traces(target, frame, chosen),
                         route_bounds(target, frame, chosen, pad=TARGET_PAD_DEG))


def warm_routes(ctx: WallContext) -> None:
    """Build (or check) the cached road graph in the background, so that the first click on a gap does
    not wait for it; a database away is left to the click to report."""
    def build() -> None:
        try:
            road_graph(ctx.engine)
        except DB_ERRORS:
            pass

    threading.Thread(target=build, name="road-graph", daemon=True).start()


def _empty_ranking() -> pd.DataFrame:
    return pd.DataFrame(columns=["callsign", "kind", "lon", "lat", "eta_s", "via", "route_m", "route"])


def _note(text: str) -> html.Div:
    return html.Div(text, className="note")


def alerts_update(ctx: WallContext, *, at: datetime | None, lang: str, can_acknowledge: bool, unit: str | None
                  ) -> list | None:
    """The alert panel of command unit ``unit`` (None: all): live (refreshed first) or as open at ``at``;
    buttons when ``can_acknowledge``."""
    note = ""
    try:
        if at is None:
            with ctx.engine.begin() as conn:
                refresh_alerts(conn, ctx.settings, datetime.now(timezone.utc))
        else:
            note = t("alerts_at", lang, t=local_time(at, ctx.settings.timezone, "%m-%d %H:%M"))
        alerts = alerts_at(ctx.engine, at=at, scope=scope_id(ctx, unit))
    except DB_ERRORS:
        return None
    return alert_list(alerts, lang=lang, timezone=ctx.settings.timezone, live=at is None and can_acknowledge,
                      now=at or datetime.now(timezone.utc), note=note)


def panel_digest(panel: list | dict) -> str:
    """A digest of a panel (its components or data) or a trace, to tell whether it changed since it was last sent."""
    return hashlib.sha1(json.dumps(panel, cls=PlotlyJSONEncoder).encode()).hexdigest()


def acknowledge_alerts(ctx: WallContext, alert_ids: list[int], *, who: str, address: str | None, unit: str | None
                       ) -> bool:
    """Acknowledge the alerts (one, or a group's members) of command unit ``unit`` (None: any) as the
    signed-in ``who``; False when the database is away or none of them is in ``unit``.

    An alert acknowledged meanwhile by another dispatcher is left as it is: the list shows who.
    """
    try:
        ids = alerts_in_scope(ctx.engine, alert_ids, scope=scope_id(ctx, unit))
        if not ids:
            return False
        with ctx.engine.begin() as conn:
            acknowledge_all(conn, ids, who, address=address)
    except DB_ERRORS:
        return False
    return True


@dataclass(frozen=True)
class UnitsUpdate:
    """The units trace (None: keep the last), the banner (text, class), the time label and the map's note
    (why a past moment's map is empty, else "")."""

    trace: dict[str, Any] | None
    banner: tuple[str, str]
    time_label: str
    note: str = ""


def units_update(ctx: WallContext, *, at: datetime | None, lang: str, unit: str | None) -> UnitsUpdate:
    """Units of command unit ``unit`` (None: all) now (with the data banner) or at ``at`` (the slider's moment)."""
    label = t("time_now", lang) if at is None else t("time_at", lang, t=local_time(at, ctx.settings.timezone,
                                                                                      "%m-%d %H:%M"))
    try:
        scope = scope_id(ctx, unit)
        units = (live_units(ctx.engine, ctx.settings, scope=scope) if at is None
                 else positions_at(ctx.engine, ctx.settings, at, scope=scope))
        status = data_status(ctx.engine, ctx.settings)
    except DB_ERRORS:
        return UnitsUpdate(None, banner("db", lang=lang), label)
    trace = units_trace(units, timezone=ctx.settings.timezone)
    note = t("no_positions", lang) if at is not None and units.empty else ""
    if status.empty:
        return UnitsUpdate(trace, banner("empty", lang=lang), label, note)
    if status.stale:
        return UnitsUpdate(trace, banner("stale", lang=lang, since=local_time(status.newest_fix,
                                                                             ctx.settings.timezone)), label, note)
    return UnitsUpdate(trace, banner(None, lang=lang), label, note)


@dataclass(frozen=True)
class ReplayUpdate:
    """The replayed track's line (empty for the whole situation), the frames the page plays (each
    [lon, lat, local time], lon and lat lists of every unit for the whole situation), and the note
    for an empty window (else "")."""

    line: dict[str, Any]
    frames: list[list]
    note: str


def replay_update(ctx: WallContext, choice: int | str | None, *, hours: float, at: datetime | None,
                  unit: str | None, lang: str) -> ReplayUpdate | None:
    """The replay over the ``hours`` ending at ``at`` (or now) of one unit (``choice`` its id) or of every
    unit (:data:`ALL_UNITS`) of command unit ``unit`` (None: all); None while the database is down."""
    end = at or datetime.now(timezone.utc)
    start, scope = end - timedelta(hours=hours), scope_id(ctx, unit)
    zone = ctx.settings.timezone
    try:
        if choice == ALL_UNITS:
            moments = situation(ctx.engine, ctx.settings, start=start, end=end, scope=scope)
        else:
            fixes = track(ctx.engine, int(choice), start=start, end=end, scope=scope) if choice else None
    except DB_ERRORS:
        return None
    if choice == ALL_UNITS:
        line = track_trace(pd.DataFrame({"lon": [], "lat": []}))
        steps = moments.groupby("step", sort=True).agg(lon=("lon", list), lat=("lat", list), at=("at", "first"))
        when = pd.to_datetime(steps["at"], utc=True).dt.tz_convert(zone).dt.strftime("%H:%M")
        frames = pd.DataFrame({"lon": steps["lon"], "lat": steps["lat"], "when": when}).values.tolist()
    else:
        if fixes is None:
            fixes = pd.DataFrame({"ts": pd.to_datetime([], utc=True), "lon": [], "lat": []})
        line = track_trace(fixes)
        when = pd.to_datetime(fixes["ts"], utc=True).dt.tz_convert(zone).dt.strftime("%H:%M:%S")
        frames = pd.DataFrame({"lon": fixes["lon"], "lat": fixes["lat"], "when": when}).values.tolist()
    return ReplayUpdate(line, frames, t("no_positions", lang) if choice and not frames else "")


def unit_choices(ctx: WallContext, *, unit: str | None, lang: str) -> list[dict[str, Any]]:
    """Replay options: the whole situation, then every unit of command unit ``unit`` (None: all) by
    callsign (only the whole situation while the database is down)."""
    every = [{"label": t("replay_all", lang), "value": ALL_UNITS}]
    try:
        roster = unit_roster(ctx.engine, scope=scope_id(ctx, unit))
    except DB_ERRORS:
        return every
    return every + pd.DataFrame({"label": roster["callsign"] + " · " + roster["kind"],
                                 "value": roster["unit_id"]}).to_dict("records")
