"""The dispatcher's panels and map traces as plain functions of query results.

Lists are ``html.Table`` rows whose ids are pattern-matched by the page's
callbacks (``dispatch-unit-row``, ``dispatch-ack``, ``dispatch-ack-group``),
except the long target list, which is data the page's script draws and selects
from (``assets/dispatch.js``).
Traces come in :data:`TRACES` order so that callbacks replace them one by one
with a ``dash.Patch``.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from dash import html

from gridwatch.dashboard.i18n import t
from gridwatch.dashboard.live_map import KIND_COLOURS
from gridwatch.dashboard.wall_panels import local_time
from gridwatch.layers.catalog import COVERAGE_COLOURS, SEVERITY_COLOURS

__all__ = ["TRACES", "ROUTE_COLOUR", "duration", "length", "ago", "gap_labels", "gap_times", "alert_text",
           "target_table", "nearest_table", "alert_list", "units_trace", "route_traces", "route_bounds", "track_trace"]

TRACES = ("units", "track", "route", "target", "nearest", "replay")
ROUTE_COLOUR = "#22d3ee"
SILENT_COLOUR = "#64748b"


def duration(seconds: float, lang: str) -> str:
    """``3 h 05 min`` (or ``12 min``) in the UI language."""
    minutes = int(abs(seconds) // 60)
    if minutes < 60:
        return t("dur_m", lang, m=minutes)
    return t("dur_hm", lang, h=minutes // 60, m=minutes % 60)


def gap_labels(gaps: pd.DataFrame, lang: str) -> list[str]:
    return [
        t(f"gap_{row.kind}", lang, km_from=f"{row.km_from:.1f}" if row.kind == "segment" else "",
          km_to=f"{row.km_to:.1f}" if row.kind == "segment" else "", code=row.code, id=row.id)
        for row in gaps.itertuples()
    ]


def _targets(frame: pd.DataFrame, *, mode: str, lang: str) -> list[dict[str, Any]]:
    """What the page keeps of each listed target: key, label, point and bounds."""
    labels = gap_labels(frame, lang) if mode == "gaps" else (frame["source_id"] + " · " + frame["kind"]).tolist()
    return frame.assign(label=labels)[["key", "label", "lon", "lat", "west", "south", "east", "north"]].to_dict("records")


def gap_times(gap: Any, *, lang: str, timezone: str, window_start: datetime) -> tuple[str, str]:
    """How far past its limit a gap is and when it was last visited, in words; a gap with no visit in
    the look-back window reads "> N h" and "no visit since" the window's start, never "never"."""
    if pd.isna(gap.last_visit):
        return (t("more_than", lang, d=duration(gap.overdue_s, lang)),
                t("no_visit_since", lang, t=local_time(window_start, timezone, "%m-%d %H:%M")))
    overdue = duration(gap.overdue_s, lang) if gap.overdue_s > 0 else t("due_in", lang, d=duration(gap.overdue_s, lang))
    return overdue, local_time(gap.last_visit, timezone, "%m-%d %H:%M")


def _cell(text: str, *, cls: str = "", title: str | None = None, dot: str | None = None,
          colour: str | None = None) -> dict[str, str]:
    """A cell as the browser draws it: text, class, hover title, a dot of a colour before it, a text colour."""
    cell = {"text": text, "class": cls, "title": title, "dot": dot, "color": colour}
    return {k: v for k, v in cell.items() if v}


def _gap_cells(gap: Any, label: str, *, lang: str, timezone: str, window_start: datetime,
               lookback_h: float) -> list[dict[str, str]]:
    overdue, visit = gap_times(gap, lang=lang, timezone=timezone, window_start=window_start)
    title = t("no_visit_within", lang, h=f"{lookback_h:g}") if pd.isna(gap.last_visit) else None
    return [_cell(label, dot=COVERAGE_COLOURS[gap.status]),
            _cell(t(f"zone_{gap.zone_kind}", lang) if isinstance(gap.zone_kind, str) else "—"),
            _cell(overdue, cls="num"), _cell(visit, cls="num", title=title)]


def _incident_cells(incident: Any, label: str, *, lang: str, timezone: str) -> list[dict[str, str]]:
    return [_cell(label), _cell(t("severity_n", lang, n=incident.severity), colour=SEVERITY_COLOURS[incident.severity]),
            _cell(local_time(incident.reported_at, timezone, "%m-%d %H:%M"), cls="num"), _cell(incident.status)]


def target_table(frame: pd.DataFrame, *, mode: str, lang: str, timezone: str, now: datetime,
                 lookback_h: float) -> dict[str, Any]:
    """The gap list (most urgent first) or the open incidents as the browser draws it (``drawTargets`` in
    assets/dispatch.js): a caption, the column heads and each row's target (key, label, point, bounds), tone and cells,
    or the note that there are none. A list of hundreds of rows is one piece of data, not a component per
    cell, which Dash would walk on every update of the page."""
    if frame.empty:
        return {"empty": t("no_gaps" if mode == "gaps" else "no_incidents", lang), "rows": []}
    rows = _targets(frame, mode=mode, lang=lang)
    if mode == "gaps":
        window_start = now - timedelta(hours=lookback_h)
        return {"caption": t("gaps_ranked", lang, h=f"{lookback_h:g}"),
                "head": [t("col_place", lang), t("col_zone", lang), t("col_overdue", lang), t("col_last_visit", lang)],
                "rows": [{"target": r, "tone": g.status,
                          "cells": _gap_cells(g, r["label"], lang=lang, timezone=timezone, window_start=window_start,
                                              lookback_h=lookback_h)}
                         for r, g in zip(rows, frame.itertuples())]}
    return {"head": [t("col_incident", lang), t("col_severity", lang), t("col_reported", lang), ""],
            "rows": [{"target": r, "cells": _incident_cells(i, r["label"], lang=lang, timezone=timezone)}
                     for r, i in zip(rows, frame.itertuples())]}


def nearest_table(ranked: pd.DataFrame, *, chosen: int, lang: str) -> html.Table | html.Div:
    """The ranked units with ETA (minutes) and route length; the chosen one's route is drawn."""
    if ranked.empty:
        return html.Div(t("nearest_none", lang), className="empty")
    body = [
        html.Tr([
            html.Td(str(rank + 1), className="num"),
            html.Td([html.Span(className="dot", style={"background": KIND_COLOURS[u.kind]}), u.callsign]),
            html.Td(t(f"kind_{u.kind}", lang)),
            html.Td(t("dur_m", lang, m=int(round(u.eta_s / 60))), className="num eta"),
            html.Td(t(f"via_{u.via}", lang, km=f"{u.route_m / 1000:.1f}"), className="num how"),
        ], id={"type": "dispatch-unit-row", "index": rank}, className="pick selected" if rank == chosen else "pick")
        for rank, u in enumerate(ranked.itertuples())
    ]
    head = ["#", t("col_unit", lang), "", t("col_eta", lang), t("col_route", lang)]
    return html.Table([html.Thead(html.Tr([html.Th(h) for h in head])), html.Tbody(body)], className="list")


def length(metres: float, lang: str) -> str:
    """``153.0 km`` (or ``850 m`` below a kilometre) in the UI language."""
    return t("km", lang, km=f"{metres / 1000:.1f}") if metres >= 1000 else t("m", lang, m=f"{metres:.0f}")


def ago(ts: datetime, now: datetime, lang: str) -> str:
    """``12 min ago`` (``just now`` within a minute) in the UI language."""
    seconds = (now - ts).total_seconds()
    return t("just_now", lang) if seconds < 60 else t("ago", lang, d=duration(seconds, lang))


def alert_text(kind: str, detail: dict[str, Any], lang: str) -> str:
    values = {k: ("—" if v is None else v) for k, v in detail.items()}
    for key in ("length_m", "distance_m"):
        if detail.get(key) is not None:
            values[key] = length(float(detail[key]), lang)
    return t(f"alert_{kind}", lang, **values)


def _when(ts: datetime, now: datetime, *, lang: str, timezone: str) -> html.Span:
    return html.Span(ago(ts, now, lang), className="num when", title=local_time(ts, timezone, "%m-%d %H:%M:%S"))


def _acknowledgement(a: Any, *, lang: str, timezone: str, live: bool) -> html.Span | html.Button | None:
    """Who acknowledged the alert and when, or (live) its Acknowledge button, whose id carries the alert's id."""
    if pd.notna(a.acknowledged_at):
        return html.Span(t("acked_by", lang, who=a.acknowledged_by, t=local_time(a.acknowledged_at, timezone, "%H:%M")),
                         className="acked")
    return html.Button(t("ack", lang), id={"type": "dispatch-ack", "id": int(a.id)}, className="ack") if live else None


def _severity(severity: int, lang: str) -> html.Span:
    colour = SEVERITY_COLOURS[severity]
    return html.Span(t("severity_n", lang, n=severity), className="sev", style={"borderColor": colour, "color": colour})


def _alert_item(a: Any, *, lang: str, timezone: str, live: bool, now: datetime) -> html.Li:
    return html.Li([
        _severity(a.severity, lang), _when(a.raised_at, now, lang=lang, timezone=timezone),
        html.Span(alert_text(a.kind, a.detail, lang), className="what"),
        _acknowledgement(a, lang=lang, timezone=timezone, live=live),
    ], className="alert" + ("" if pd.notna(a.acknowledged_at) else " unacked"), **{"data-kind": a.kind})


def _group_item(group: pd.DataFrame, *, lang: str, timezone: str, live: bool, now: datetime) -> html.Li:
    """One alert as it is; several of one kind and place as one row with their count, newest time and
    one button for all, expanding to the members."""
    members = [_alert_item(a, lang=lang, timezone=timezone, live=live, now=now) for a in group.itertuples()]
    if len(members) == 1:
        return members[0]
    first = group.iloc[0]
    place = first["place_en" if lang == "en" else "place"]
    title = t("alert_group", lang, kind=t(f"alerts_{first['kind']}", lang),
              place=place if isinstance(place, str) else t("place_unknown", lang), n=len(group))
    unacked = group.loc[group["acknowledged_at"].isna(), "id"].astype(int).tolist()
    button = (html.Button(t("ack_group", lang, n=len(unacked)), className="ack ack-group",
                          id={"type": "dispatch-ack-group", "ids": ",".join(map(str, unacked))})
              if live and unacked else None)
    return html.Li([
        html.Details([html.Summary([_severity(int(group["severity"].max()), lang),
                                    _when(group["raised_at"].max(), now, lang=lang, timezone=timezone),
                                    html.Span(title, className="what"), button]),
                      html.Ul(members, className="alerts members")]),
    ], className="alert group" + (" unacked" if unacked else ""), **{"data-kind": first["kind"],
                                                                     "data-count": str(len(group))})


def _grouped(alerts: pd.DataFrame, *, lang: str, timezone: str, live: bool, now: datetime) -> list[html.Li]:
    places = alerts["place"].fillna("")
    return [_group_item(group, lang=lang, timezone=timezone, live=live, now=now)
            for _, group in alerts.groupby([alerts["kind"], places], sort=False)]


def alert_list(alerts: pd.DataFrame, *, lang: str, timezone: str, live: bool, now: datetime, note: str = "") -> list:
    """The alerts grouped by kind and place, most severe then newest first, with relative times; those
    already true when alerting began under one heading that says so once. Unacknowledged ones are
    highlighted with a button each, and a group with one for all its members (live only)."""
    head = html.Div(note, className="note") if note else None
    if alerts.empty:
        return [head, html.Div(t("alerts_none", lang), className="empty")]
    at_start = alerts["at_start"].astype(bool)
    since, before = alerts[~at_start], alerts[at_start]
    items = _grouped(since, lang=lang, timezone=timezone, live=live, now=now) if len(since) else []
    if len(before):
        heading = t("alerts_at_start", lang, n=len(before),
                    t=local_time(before["raised_at"].iloc[0], timezone, "%m-%d %H:%M"))
        items.append(html.Li([
            html.Div(heading, className="at-start-title"),
            html.Ul(_grouped(before, lang=lang, timezone=timezone, live=live, now=now), className="alerts"),
        ], className="at-start"))
    return [head, html.Ul(items, className="alerts")]


def units_trace(units: pd.DataFrame, *, timezone: str) -> dict[str, Any]:
    """Every unit as a dot in its kind's colour (grey when silent), callsign and fix time on hover."""
    colours = np.where(units["silent"].to_numpy(dtype=bool), SILENT_COLOUR,
                       units["kind"].map(KIND_COLOURS).fillna(SILENT_COLOUR).to_numpy())
    when = pd.to_datetime(units["ts"], utc=True).dt.tz_convert(timezone).dt.strftime("%H:%M:%S")
    return {"type": "scattermap", "name": "units", "mode": "markers", "lon": units["lon"].tolist(),
            "lat": units["lat"].tolist(), "text": (units["callsign"] + " " + when).tolist(),
            "marker": {"size": 11, "color": colours.tolist()}, "hovertemplate": "%{text}<extra></extra>"}


def route_traces(target: dict[str, Any] | None, ranked: pd.DataFrame, chosen: int) -> list[dict[str, Any]]:
    """The route of the chosen unit, the target, and the ranked units (TRACES[2:5])."""
    route = ranked["route"].iloc[chosen] if 0 <= chosen < len(ranked) else []
    lon, lat = (list(c) for c in zip(*route)) if route else ([], [])
    return [
        {"type": "scattermap", "name": "route", "mode": "lines", "lon": lon, "lat": lat,
         "line": {"color": ROUTE_COLOUR, "width": 5}, "hoverinfo": "skip"},
        {"type": "scattermap", "name": "target", "mode": "markers",
         "lon": [target["lon"]] if target else [], "lat": [target["lat"]] if target else [],
         "marker": {"size": 26, "color": "#f43f5e", "opacity": 0.55}, "hoverinfo": "skip"},
        {"type": "scattermap", "name": "nearest", "mode": "markers", "lon": ranked["lon"].tolist(),
         "lat": ranked["lat"].tolist(), "text": ranked["callsign"].tolist(),
         "marker": {"size": 22, "color": ROUTE_COLOUR, "opacity": 0.45},
         "hovertemplate": "%{text}<extra></extra>"},
    ]


def route_bounds(target: dict[str, Any], ranked: pd.DataFrame, chosen: int, *, pad: float) -> list[float]:
    """[west, south, east, north] around the target's bounds, the chosen unit and its route, ``pad`` degrees
    wider on each side."""
    route = ranked["route"].iloc[chosen] if 0 <= chosen < len(ranked) else []
    lonlat = np.array([[target["west"], target["south"]], [target["east"], target["north"]], *route], dtype=float)
    (west, south), (east, north) = lonlat.min(axis=0), lonlat.max(axis=0)
    return [float(west - pad), float(south - pad), float(east + pad), float(north + pad)]


def track_trace(track: pd.DataFrame) -> dict[str, Any]:
    """The replayed unit's track as a line."""
    return {"type": "scattermap", "name": "track", "mode": "lines", "lon": track["lon"].tolist(),
            "lat": track["lat"].tolist(), "line": {"color": "#fbbf24", "width": 3}, "hoverinfo": "skip"}
