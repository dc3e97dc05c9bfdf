"""The dispatcher's panels and map traces as plain functions of query results.

Lists are ``html.Table`` rows whose ids are pattern-matched by the page's
callbacks (``dispatch-target-row``, ``dispatch-unit-row``, ``dispatch-ack``).
Traces come in :data:`TRACES` order so that callbacks replace them one by one
with a ``dash.Patch``.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from dash import html

from gridwatch.dashboard.i18n import t
from gridwatch.dashboard.live_map import KIND_COLOURS
from gridwatch.dashboard.wall_panels import local_time
from gridwatch.layers.catalog import COVERAGE_COLOURS, SEVERITY_COLOURS

__all__ = ["TRACES", "ROUTE_COLOUR", "duration", "gap_labels", "alert_text", "target_rows", "target_table", "nearest_table", "alert_list",
           "units_trace", "route_traces", "track_trace"]

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


def target_rows(frame: pd.DataFrame, *, mode: str, lang: str) -> list[dict[str, Any]]:
    """What the page keeps of each listed target: key, label, point and bounds."""
    labels = gap_labels(frame, lang) if mode == "gaps" else (frame["source_id"] + " · " + frame["kind"]).tolist()
    return frame.assign(label=labels)[["key", "label", "lon", "lat", "west", "south", "east", "north"]].to_dict("records")


def _row(key: str, cells: list, *, selected: bool, tone: str = "") -> html.Tr:
    return html.Tr(cells, id={"type": "dispatch-target-row", "key": key},
                   className=" ".join(filter(None, ["pick", tone, "selected" if selected else ""])))


def target_table(frame: pd.DataFrame, rows: list[dict[str, Any]], *, mode: str, lang: str, timezone: str,
                 selected: str | None) -> html.Table | html.Div:
    """The gap list (most overdue first) or the open incidents, each row selectable."""
    if frame.empty:
        return html.Div(t("no_gaps" if mode == "gaps" else "no_incidents", lang), className="empty")
    if mode == "gaps":
        head = [t("col_place", lang), t("col_zone", lang), t("col_overdue", lang), t("col_last_visit", lang)]
        body = [
            _row(r["key"], [
                html.Td([html.Span(className="dot", style={"background": COVERAGE_COLOURS[g.status]}), r["label"]]),
                html.Td(t(f"zone_{g.zone_kind}", lang) if isinstance(g.zone_kind, str) else "—"),
                html.Td(t("never", lang) if pd.isna(g.last_visit) else
                        duration(g.overdue_s, lang) if g.overdue_s > 0 else t("due_in", lang, d=duration(g.overdue_s, lang)),
                        className="num"),
                html.Td(local_time(g.last_visit if not pd.isna(g.last_visit) else None, timezone, "%m-%d %H:%M"),
                        className="num"),
            ], selected=r["key"] == selected, tone=g.status)
            for r, g in zip(rows, frame.itertuples())
        ]
    else:
        head = [t("col_incident", lang), t("col_severity", lang), t("col_reported", lang), ""]
        body = [
            _row(r["key"], [
                html.Td(r["label"]),
                html.Td(t("severity_n", lang, n=i.severity), style={"color": SEVERITY_COLOURS[i.severity]}),
                html.Td(local_time(i.reported_at, timezone, "%m-%d %H:%M"), className="num"),
                html.Td(i.status),
            ], selected=r["key"] == selected)
            for r, i in zip(rows, frame.itertuples())
        ]
    return html.Table([html.Thead(html.Tr([html.Th(h) for h in head])), html.Tbody(body)], className="list")


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
            html.Td(t(f"via_{u.via}", lang, km=f"{u.route_m / 1000:.1f}"), className="num"),
        ], id={"type": "dispatch-unit-row", "index": rank}, className="pick selected" if rank == chosen else "pick")
        for rank, u in enumerate(ranked.itertuples())
    ]
    head = ["#", t("col_unit", lang), "", t("col_eta", lang), t("col_route", lang)]
    return html.Table([html.Thead(html.Tr([html.Th(h) for h in head])), html.Tbody(body)], className="list")


def alert_text(kind: str, detail: dict[str, Any], lang: str) -> str:
    return t(f"alert_{kind}", lang, **{k: ("—" if v is None else v) for k, v in detail.items()})


def alert_list(alerts: pd.DataFrame, *, lang: str, timezone: str, live: bool, note: str = "") -> list:
    """The alerts, most severe then newest first; unacknowledged ones highlighted with a button (live only)."""
    if alerts.empty:
        return [html.Div(note, className="note") if note else None, html.Div(t("alerts_none", lang), className="empty")]
    items = [
        html.Li([
            html.Span(t("severity_n", lang, n=a.severity), className="sev",
                      style={"borderColor": SEVERITY_COLOURS[a.severity], "color": SEVERITY_COLOURS[a.severity]}),
            html.Span(local_time(a.raised_at, timezone, "%H:%M"), className="num when"),
            html.Span(alert_text(a.kind, a.detail, lang), className="what"),
            html.Span(t("acked_by", lang, who=a.acknowledged_by, t=local_time(a.acknowledged_at, timezone, "%H:%M")),
                      className="acked") if pd.notna(a.acknowledged_at) else
            html.Button(t("ack", lang), id={"type": "dispatch-ack", "id": int(a.id)}, className="ack") if live else None,
        ], className="alert" + ("" if pd.notna(a.acknowledged_at) else " unacked"), **{"data-kind": a.kind})
        for a in alerts.itertuples()
    ]
    return [html.Div(note, className="note") if note else None, html.Ul(items, className="alerts")]


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


def track_trace(track: pd.DataFrame) -> dict[str, Any]:
    """The replayed unit's track as a line."""
    return {"type": "scattermap", "name": "track", "mode": "lines", "lon": track["lon"].tolist(),
            "lat": track["lat"].tolist(), "line": {"color": "#fbbf24", "width": 3}, "hoverinfo": "skip"}
