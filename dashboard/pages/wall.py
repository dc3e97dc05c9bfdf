"""The situation wall: KPI strip, the map with live units, layer toggles, drill-down.

``/wall?unit=CODE&lang=zh``. Live units refresh by Patch every ``live_refresh_s``
(5 s), skipping a tick while the map still draws the last one; KPIs, options and
live vector layers every ``refresh_s`` (30 s). The clock and the picture's age tick
in the browser; a callsign search flies the map to its unit and rings it. The layout reads only the
drill-down options and survives a database outage; the callbacks fill in the rest.
"""
from __future__ import annotations

import math

import dash
import flask
from dash import ClientsideFunction, Input, Output, State, callback, clientside_callback, dcc, html

from gridwatch.dashboard._context import context, milliseconds
from gridwatch.dashboard.access import principal, scope_code
from gridwatch.dashboard.i18n import lang_of, t
from gridwatch.dashboard.live_map import map_figure, view_of
from gridwatch.dashboard.wall_data import live_update, slow_update, start_bounds, unit_options
from gridwatch.dashboard.wall_panels import clock, hover_strings, layer_options, legend, signed_in_as
from gridwatch.layers.catalog import CATALOG

dash.register_page(__name__, path="/wall", title="gridwatch · wall")


def layout(lang: str | None = None, unit: str | None = None, **_: str) -> html.Div:
    """The wall for the language and command unit named in the URL.

    Only the drill-down options are read here (so the unit in the URL is a valid
    choice at once); everything else arrives by the callbacks.
    """
    lang = lang_of(lang)
    unit = scope_code(unit)
    settings = context().settings
    style_url = f"{flask.request.host_url}style.json?lang={lang}"
    # The first live units and banner come with the page: no callback round trip before they show.
    first = live_update(context(), unit, lang=lang)
    limits = dict(settings.coverage_limit_h)
    lookback = settings.coverage_lookback_h
    figure = map_figure(style_url, **view_of(start_bounds(context(), unit)))
    if first.traces is not None:
        figure.data = []
        figure.add_traces(first.traces)
    banner_text, banner_class = first.banner
    return html.Div(className="wall", children=[
        dcc.Store(id="wall-lang", data=lang),
        dcc.Store(id="wall-read-at", data=first.read_at_ms),
        dcc.Store(id="wall-sink-read-at"),
        dcc.Store(id="wall-live-due"),
        dcc.Store(id="wall-scale"),
        dcc.Store(id="wall-bounds"),
        dcc.Store(id="wall-sink-layers"),
        dcc.Store(id="wall-sink-tiles"),
        html.Header(className="wall-header", children=[
            html.H1(t("app_title", lang)),
            dcc.Dropdown(id="wall-scope", value=unit, options=unit_options(context(), lang=lang, within=scope_code(None)),
                         placeholder=t("scope_all", lang), className="scope", clearable=True, searchable=True),
            dcc.Dropdown(id="wall-find", options=[], placeholder=t("find_callsign", lang), className="find",
                         clearable=True, searchable=True),
            clock(lang=lang, timezone=settings.timezone),
            html.A(t("other_lang", lang), id="wall-lang-link", href=f"?lang={'en' if lang == 'zh' else 'zh'}",
                   className="lang-link"),
            html.A(t("to_dispatch", lang), href=f"/dispatch?lang={lang}", className="lang-link",
                   style={"marginLeft": 0}),
            signed_in_as(principal().name, lang),
        ]),
        html.Div(banner_text, id="wall-banner", className=banner_class),
        html.Div(id="wall-kpis", className="kpis"),
        html.Main(className="wall-main", children=[
            html.Div(className="map-wrap", children=[
                dcc.Graph(id="wall-map", figure=figure, className="map",
                          config={"displayModeBar": False, "scrollZoom": True}),
                html.Div(id="wall-hover", className="hover",
                         **{"data-strings": hover_strings(lang=lang, lookback_h=lookback, limits_h=limits)}),
            ]),
            html.Aside(className="side", children=[
                html.Div(t("layers", lang), className="legend-title"),
                dcc.Checklist(id="wall-layers", options=layer_options(CATALOG, lang=lang),
                              value=[layer.id for layer in CATALOG if layer.visible], className="toggles"),
                legend(lang=lang, lookback_h=lookback, limits_h=limits, silent_after_s=settings.unit_silent_after_s),
            ]),
        ]),
        dcc.Interval(id="wall-live-tick", interval=milliseconds(settings.live_refresh_s)),
        dcc.Interval(id="wall-slow-tick", interval=milliseconds(settings.refresh_s)),
    ])


dash.register_page(f"{__name__}.home", path="/", title="gridwatch · wall", layout=layout)


@callback(
    Output("wall-map", "figure"), Output("wall-banner", "children"), Output("wall-banner", "className"),
    Output("wall-read-at", "data"),
    Input("wall-live-due", "data"), Input("wall-scope", "value"), Input("wall-find", "value"),
    State("wall-lang", "data"), State("wall-scale", "data"),
    prevent_initial_call=True,
)
def refresh_live(_tick: int | None, unit: str | None, found: str | None, lang: str, scale: float | None):
    """Every live tick and on a callsign search: the live units (sized for the screen), their trails, the
    ringed unit, the data banner and when the picture was read."""
    update = live_update(context(), scope_code(unit), lang=lang, found=found, scale=_mark_scale(scale))
    return update.patch(), *update.banner, update.read_at_ms if update.read_at_ms else dash.no_update


def _mark_scale(reported: object) -> float:
    """The browser's mark scale (``markScale`` in assets/wall.js), kept within 1-4 whatever it sent."""
    if not isinstance(reported, int | float) or math.isnan(reported):
        return 1.0
    return min(max(float(reported), 1.0), 4.0)


@callback(
    Output("wall-kpis", "children"), Output("wall-scope", "options"), Output("wall-bounds", "data"),
    Output("wall-layers", "options"), Output("wall-find", "options"),
    Input("wall-slow-tick", "n_intervals"), Input("wall-scope", "value"),
    State("wall-lang", "data"), State("wall-bounds", "data"),
)
def refresh_slow(_tick: int | None, unit: str | None, lang: str, shown_bounds: list[float] | None):
    """Every slow tick and on drill-down: KPIs, the unit tree, the bounds to fit, the toggles, the callsigns."""
    update = slow_update(context(), scope_code(unit), lang=lang, within=scope_code(None))
    if update is None:
        return (dash.no_update,) * 5
    bounds = dash.no_update if update.bounds == shown_bounds else update.bounds
    return update.kpis, update.scope_options, bounds, update.layer_options, update.callsigns


clientside_callback(ClientsideFunction("gridwatch", "whenDrawn"), Output("wall-live-due", "data"),
                    Input("wall-live-tick", "n_intervals"), State("wall-map", "id"), prevent_initial_call=True)
clientside_callback(ClientsideFunction("gridwatch", "markScale"), Output("wall-scale", "data"),
                    Input("wall-slow-tick", "n_intervals"))
clientside_callback(ClientsideFunction("gridwatch", "setLayers"),
                    Output("wall-sink-layers", "data"), Input("wall-layers", "value"))
clientside_callback(ClientsideFunction("gridwatch", "fitBounds"),
                    Output("wall-map", "figure", allow_duplicate=True), Input("wall-bounds", "data"),
                    prevent_initial_call=True)
clientside_callback(ClientsideFunction("gridwatch", "refreshLive"),
                    Output("wall-sink-tiles", "data"), Input("wall-slow-tick", "n_intervals"))
clientside_callback(ClientsideFunction("gridwatch", "flyTo"),
                    Output("wall-map", "figure", allow_duplicate=True), Input("wall-find", "value"),
                    prevent_initial_call=True)
clientside_callback(ClientsideFunction("gridwatch", "readAt"),
                    Output("wall-sink-read-at", "data"), Input("wall-read-at", "data"))
clientside_callback(ClientsideFunction("gridwatch", "keepUrl"),
                    Output("wall-lang-link", "href"), Input("wall-scope", "value"), State("wall-lang", "data"))
