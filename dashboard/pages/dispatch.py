"""The dispatcher's desk: gaps by urgency, nearest units by travel time, alerts, and the last 24 h.

``/dispatch?unit=CODE&lang=zh``. A click on a gap (or an open incident) ranks
the available units by travel time for their kind, draws the route of the
chosen one and fits the map to the gap, the unit and the route. The row is
selected in the browser as it is pressed, so the press costs one request (the
road graph is built while the page opens, not on the first click), and that
answer is the list alone: the route and the fit are drawn on the map by the
browser once the list is shown, as one patch of the figure. Gaps are ranked by
urgency (how far past its zone's limit, relative to the limit). Alerts refresh
every ``alert_refresh_s`` (10 s), grouped by kind and place, and are
acknowledged one by one or a group at a time by the signed-in account (a
dispatcher or above; a viewer sees the list without buttons). The time slider
shows the units and the alerts at any moment of the last 24 h (coverage layers
stay "now"; "no positions in this window" when there are none); the hours
before it replay as the whole situation (every unit) or as one unit's track. A
dispatcher downloads the evidence (GeoPackage) or the shift report (PDF) of the
chosen command unit over the shift (``shift_hours``) ending at the slider's
moment.
"""
from __future__ import annotations

import dash
import flask
from dash import ALL, ClientsideFunction, Input, Output, State, callback, clientside_callback, dcc, html

from gridwatch.dashboard._context import DB_ERRORS, context, milliseconds
from gridwatch.dashboard.access import may, principal, scope_code
from gridwatch.dashboard.dispatch_data import (
    ALL_UNITS,
    acknowledge_alerts,
    alerts_update,
    evidence_file,
    moment,
    nearest_update,
    panel_digest,
    replay_update,
    targets_update,
    unit_choices,
    units_update,
    warm_routes,
)
from gridwatch.dashboard.dispatch_panels import TRACES
from gridwatch.dashboard.i18n import lang_of, t
from gridwatch.dashboard.live_map import map_figure
from gridwatch.dashboard.wall_data import unit_options
from gridwatch.dashboard.wall_panels import signed_in_as
from gridwatch.layers.queries import jurisdiction_bounds
from gridwatch.settings import ZONE_KINDS

dash.register_page(__name__, path="/dispatch", title="gridwatch · dispatch")

REPLAY_MS = 200
HOURS = (1, 2, 4, 8, 24)


def _figure(style_url: str):
    fig = map_figure(style_url)
    fig.data = []
    for name in TRACES:
        fig.add_scattermap(name=name, lon=[], lat=[])
    fig.update_layout(uirevision="dispatch", font={"size": 13}, hoverlabel={"font": {"size": 14}})
    return fig


def _home() -> list[float] | None:
    try:
        bounds = jurisdiction_bounds(context().engine)
    except DB_ERRORS:
        return None
    return list(bounds) if bounds else None


def _evidence_buttons(lang: str) -> list:
    """The evidence and shift-report buttons and their download, for a dispatcher or above."""
    if not may("dispatcher"):
        return []
    return [html.Button(t("export_evidence", lang), id="dispatch-export", className="nav-link export"),
            html.Button(t("shift_report", lang), id="dispatch-report", className="nav-link export"),
            dcc.Download(id="dispatch-download")]


def layout(lang: str | None = None, unit: str | None = None, **_: str) -> html.Div:
    """The desk for the language and command unit named in the URL; the callbacks fill the panels."""
    lang = lang_of(lang)
    unit = scope_code(unit)
    ctx = context()
    warm_routes(ctx)
    other = "en" if lang == "zh" else "zh"
    return html.Div(className="dispatch", children=[
        dcc.Store(id="dispatch-lang", data=lang),
        dcc.Store(id="dispatch-fit", data=_home()),
        dcc.Store(id="dispatch-live-due"),
        dcc.Store(id="dispatch-units-shown"),
        dcc.Store(id="dispatch-rows"),
        dcc.Store(id="dispatch-targets-shown"),
        dcc.Store(id="dispatch-sink-targets"),
        dcc.Store(id="dispatch-target"),
        dcc.Store(id="dispatch-ranked"),
        dcc.Store(id="dispatch-route"),
        dcc.Store(id="dispatch-frames"),
        dcc.Store(id="dispatch-acked"),
        dcc.Store(id="dispatch-acked-group"),
        dcc.Store(id="dispatch-alerts-shown"),
        html.Header(className="dispatch-header", children=[
            html.H1(t("dispatch_title", lang)),
            dcc.Dropdown(id="dispatch-scope", value=unit, options=unit_options(ctx, lang=lang, within=scope_code(None)),
                         placeholder=t("scope_all", lang), className="scope", clearable=True),
            dcc.Dropdown(id="dispatch-zone", options=[{"label": t(f"zone_{k}", lang), "value": k} for k in ZONE_KINDS],
                         placeholder=t("zone_all", lang), className="zone", clearable=True),
            *_evidence_buttons(lang),
            signed_in_as(principal().name, lang),
            html.A(t("to_wall", lang), href=f"/wall?lang={lang}", className="nav-link"),
            html.A(t("other_lang", lang), href=f"?lang={other}", className="nav-link"),
        ]),
        html.Div(id="dispatch-banner", className="banner hidden"),
        html.Div(id="dispatch-export-note", className="note export-note"),
        html.Main(className="dispatch-main", children=[
            html.Section(className="dispatch-mapcol", children=[
                dcc.Graph(id="dispatch-map", figure=_figure(f"{flask.request.host_url}style.json?lang={lang}"),
                          className="map", config={"displayModeBar": False, "scrollZoom": True}),
                html.Div(id="dispatch-map-note", className="map-note"),
                html.Div(className="timebar", children=[
                    html.Div(id="dispatch-time-label", className="time-label"),
                    dcc.Slider(id="dispatch-time", min=-1440, max=0, step=5, value=0, included=False, allow_direct_input=False,
                               marks={m: t("hours_ago", lang, n=-m // 60) if m else t("now_mark", lang)
                                      for m in range(-1440, 1, 180)}, className="slider"),
                    html.Div(className="replay", children=[
                        dcc.Dropdown(id="dispatch-replay-unit", value=ALL_UNITS, className="replay-unit",
                                     options=unit_choices(ctx, unit=scope_code(None), lang=lang),
                                     placeholder=t("replay_unit", lang)),
                        dcc.Dropdown(id="dispatch-replay-hours", value=2, clearable=False, className="replay-hours",
                                     options=[{"label": t("replay_hours", lang, n=h), "value": h} for h in HOURS]),
                        html.Button(t("play", lang), id="dispatch-play", className="play"),
                        html.Span(id="dispatch-replay-when", className="num replay-when"),
                    ]),
                ]),
            ]),
            html.Aside(className="dispatch-side", children=[
                html.Section(className="panel targets", children=[
                    dcc.RadioItems(id="dispatch-mode", value="gaps", className="tabs", inline=True, options=[
                        {"label": t("list_gaps", lang), "value": "gaps"},
                        {"label": t("list_incidents", lang), "value": "incidents"}]),
                    html.Div(id="dispatch-targets", className="panel-body"),  # drawn by drawTargets
                ]),
                html.Section(className="panel nearest", children=[
                    html.H2(t("nearest_title", lang)),
                    html.Div(nearest_update(ctx, None, lang=lang, unit=None).panel, id="dispatch-nearest",
                             className="panel-body"),
                ]),
                html.Section(className="panel alerts-panel", children=[
                    html.H2(t("alerts_title", lang)),
                    html.Div(id="dispatch-alerts", className="panel-body"),
                ]),
            ]),
        ]),
        dcc.Interval(id="dispatch-live-tick", interval=milliseconds(ctx.settings.live_refresh_s)),
        dcc.Interval(id="dispatch-alert-tick", interval=milliseconds(ctx.settings.alert_refresh_s)),
        dcc.Interval(id="dispatch-slow-tick", interval=milliseconds(ctx.settings.refresh_s)),
        dcc.Interval(id="dispatch-replay-tick", interval=REPLAY_MS, disabled=True, n_intervals=0),
    ])


def _clicked() -> bool:
    """Whether the pattern-matched input that fired was really clicked (not just re-rendered)."""
    return bool(dash.ctx.triggered and dash.ctx.triggered[0]["value"])


@callback(
    Output("dispatch-rows", "data"), Output("dispatch-targets-shown", "data"),
    Input("dispatch-slow-tick", "n_intervals"), Input("dispatch-mode", "value"), Input("dispatch-scope", "value"),
    Input("dispatch-zone", "value"), State("dispatch-targets-shown", "data"), State("dispatch-lang", "data"),
)
def refresh_targets(_tick, mode: str, unit: str | None, zone: str | None, shown: str | None, lang: str):
    """Every slow tick and on a filter change: the gap list (or the open incidents), sent only when it changed;
    the browser draws it (``drawTargets``) and marks the row pressed."""
    table = targets_update(context(), mode=mode, unit=scope_code(unit), zone_kind=zone, lang=lang)
    digest = None if table is None else panel_digest(table)
    if digest in (None, shown):
        return dash.no_update, dash.no_update
    return table, digest


@callback(
    Output("dispatch-nearest", "children"), Output("dispatch-ranked", "data"), Output("dispatch-route", "data"),
    Input("dispatch-target", "data"), Input({"type": "dispatch-unit-row", "index": ALL}, "n_clicks"),
    State("dispatch-ranked", "data"), State("dispatch-lang", "data"), prevent_initial_call=True,
)
def nearest(target: dict | None, _clicks, ranked: list[dict] | None, lang: str):
    """On a new target: rank the units; on a unit row: choose it. The list is answered alone; its route
    (traces from ``first``) and the bounds to fit (the target, the unit, the route) go to the browser's
    ``route``, which draws them on the map once the list is shown."""
    chosen = dash.ctx.triggered_id["index"] if isinstance(dash.ctx.triggered_id, dict) else None
    if chosen is not None and not _clicked():
        return dash.no_update, dash.no_update, dash.no_update
    update = nearest_update(context(), target, lang=lang, unit=scope_code(None),
                            ranked=ranked if chosen is not None else None, chosen=chosen or 0)
    if update is None:
        return dash.no_update, dash.no_update, dash.no_update
    return update.panel, update.ranked, {"first": TRACES.index("route"), "traces": update.traces, "bounds": update.fit}


@callback(
    Output("dispatch-alerts", "children"), Output("dispatch-alerts-shown", "data"),
    Input("dispatch-alert-tick", "n_intervals"), Input("dispatch-time", "value"), Input("dispatch-acked", "data"),
    Input("dispatch-acked-group", "data"), State("dispatch-alerts-shown", "data"), State("dispatch-lang", "data"),
)
def alerts(_tick, minutes_back: int, _acked, _acked_group, shown: str | None, lang: str):
    """Every 10 s and after an acknowledgement: refresh and list the alerts (or those open at the slider's moment).
    The list is redrawn only when it changed, so a button is not replaced under the pointer."""
    panel = alerts_update(context(), at=moment(minutes_back), lang=lang, can_acknowledge=may("dispatcher"),
                          unit=scope_code(None))
    digest = None if panel is None else panel_digest(panel)
    return (dash.no_update, dash.no_update) if digest in (None, shown) else (panel, digest)


def _acknowledge(alert_ids: list[int]) -> bool:
    return acknowledge_alerts(context(), alert_ids, who=principal().name, address=flask.request.remote_addr,
                              unit=scope_code(None))


@callback(
    Output("dispatch-acked", "data"), Input({"type": "dispatch-ack", "id": ALL}, "n_clicks"),
    prevent_initial_call=True,
)
def acknowledge(_clicks):
    """A click on Acknowledge: that one alert (the button's id) is acknowledged by the signed-in account.
    A list redrawn during a refresh fires this with no click (n_clicks None): nothing is acknowledged."""
    if not _clicked():
        return dash.no_update
    alert_id = int(dash.ctx.triggered_id["id"])
    return alert_id if _acknowledge([alert_id]) else dash.no_update


@callback(
    Output("dispatch-acked-group", "data"), Input({"type": "dispatch-ack-group", "ids": ALL}, "n_clicks"),
    prevent_initial_call=True,
)
def acknowledge_group(_clicks):
    """A click on a group's Acknowledge all: exactly the members its button names are acknowledged."""
    if not _clicked():
        return dash.no_update
    ids = [int(i) for i in dash.ctx.triggered_id["ids"].split(",") if i]
    return dash.ctx.triggered_id["ids"] if ids and _acknowledge(ids) else dash.no_update


@callback(
    Output("dispatch-download", "data"), Output("dispatch-export-note", "children"),
    Input("dispatch-export", "n_clicks"), Input("dispatch-report", "n_clicks"), State("dispatch-scope", "value"),
    State("dispatch-time", "value"), State("dispatch-lang", "data"), prevent_initial_call=True,
)
def evidence(_export, _report, unit: str | None, minutes_back: int, lang: str):
    """A click on Export evidence or Shift report: the file of the chosen unit's last shift, or why there is none."""
    if not _clicked():
        return dash.no_update, dash.no_update
    kind = "pdf" if dash.ctx.triggered_id == "dispatch-report" else "gpkg"
    made = evidence_file(context(), kind=kind, unit=scope_code(unit), at=moment(minutes_back), lang=lang)
    if isinstance(made, str):
        return dash.no_update, made
    return dcc.send_bytes(made[0], made[1]), ""


@callback(
    Output("dispatch-map", "figure"), Output("dispatch-units-shown", "data"), Output("dispatch-banner", "children"),
    Output("dispatch-banner", "className"), Output("dispatch-time-label", "children"),
    Output("dispatch-map-note", "children"),
    Input("dispatch-live-due", "data"), Input("dispatch-time", "value"), Input("dispatch-scope", "value"),
    State("dispatch-units-shown", "data"), State("dispatch-lang", "data"),
)
def refresh_units(_tick, minutes_back: int, unit: str | None, shown: str | None, lang: str):
    """Every live tick: the units now (or at the slider's moment, or why there are none) and the data banner.
    The units are drawn again only when they changed: a redraw of the map is the page's costliest work."""
    update = units_update(context(), at=moment(minutes_back), lang=lang, unit=scope_code(unit))
    patched = digest = dash.no_update
    if update.trace is not None and (drawn := panel_digest(update.trace)) != shown:
        patched, digest = dash.Patch(), drawn
        patched["data"][TRACES.index("units")] = update.trace
    return patched, digest, *update.banner, update.time_label, update.note


@callback(
    Output("dispatch-map", "figure", allow_duplicate=True), Output("dispatch-frames", "data"),
    Output("dispatch-replay-when", "children", allow_duplicate=True),
    Input("dispatch-replay-unit", "value"), Input("dispatch-replay-hours", "value"), Input("dispatch-time", "value"),
    State("dispatch-lang", "data"), prevent_initial_call="initial_duplicate",
)
def replay(choice: int | str | None, hours: int, minutes_back: int, lang: str):
    """The whole situation (every unit) or the chosen unit's track over the hours before the slider's moment."""
    update = replay_update(context(), choice, hours=hours, at=moment(minutes_back), unit=scope_code(None),
                           lang=lang)
    if update is None:
        return dash.no_update, dash.no_update, dash.no_update
    patched = dash.Patch()
    patched["data"][TRACES.index("track")] = update.line
    patched["data"][TRACES.index("replay")] = {"type": "scattermap", "name": "replay", "mode": "markers",
                                               "lon": [], "lat": [], "hoverinfo": "skip",
                                               "marker": {"size": 11 if choice == ALL_UNITS else 18,
                                                          "color": "#fbbf24"}}
    return patched, update.frames, update.note


clientside_callback(ClientsideFunction("dispatch", "drawTargets"), Output("dispatch-sink-targets", "data"),
                    Input("dispatch-rows", "data"), State("dispatch-target", "data"))
clientside_callback(ClientsideFunction("gridwatch", "whenDrawn"), Output("dispatch-live-due", "data"),
                    Input("dispatch-live-tick", "n_intervals"), State("dispatch-map", "id"), prevent_initial_call=True)
clientside_callback(ClientsideFunction("dispatch", "fit"),
                    Output("dispatch-map", "figure", allow_duplicate=True), Input("dispatch-fit", "data"),
                    prevent_initial_call="initial_duplicate")
clientside_callback(ClientsideFunction("dispatch", "route"),
                    Output("dispatch-map", "figure", allow_duplicate=True), Input("dispatch-route", "data"),
                    prevent_initial_call=True)
clientside_callback(ClientsideFunction("dispatch", "play"),
                    Output("dispatch-replay-tick", "disabled"), Output("dispatch-replay-tick", "n_intervals"),
                    Input("dispatch-play", "n_clicks"), State("dispatch-frames", "data"), prevent_initial_call=True)
clientside_callback(ClientsideFunction("dispatch", "step"),
                    Output("dispatch-map", "figure", allow_duplicate=True),
                    Output("dispatch-replay-when", "children"),
                    Output("dispatch-replay-tick", "disabled", allow_duplicate=True),
                    Input("dispatch-replay-tick", "n_intervals"), State("dispatch-frames", "data"),
                    prevent_initial_call=True)
