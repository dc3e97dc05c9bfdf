"""The wall's panels as plain functions of query results: KPI strip, banner, options."""
from __future__ import annotations

import json
from datetime import datetime
from zoneinfo import ZoneInfo

import pandas as pd
from dash import html

from gridwatch.dashboard.i18n import STRINGS, t
from gridwatch.dashboard.live_map import FOUND_COLOUR, HALO_COLOURS, KIND_COLOURS, SILENT_COLOUR
from gridwatch.layers.catalog import LINE_COLOURS, SEVERITY_COLOURS, Layer, Swatch, get_layer
from gridwatch.layers.queries import Kpis, subtree
from gridwatch.layers.style import style_layer_ids

__all__ = ["kpi_strip", "banner", "scope_options", "layer_options", "local_time", "legend", "signed_in_as",
           "clock", "hover_strings"]
# The catalog layers the legend keys, each under its heading, in that many columns.
LEGEND_LAYERS = {"grids": ("legend_grids", 2), "segments": ("legend_segments", 2), "lines": ("legend_lines", 2),
                 "incidents": ("legend_incidents", 5)}

_INDENT = "\u2003"  # em space


def local_time(ts: datetime | None, timezone: str, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    """A timestamp in the site's time zone."""
    return ts.astimezone(ZoneInfo(timezone)).strftime(fmt) if ts else "—"


def signed_in_as(name: str, lang: str) -> html.A:
    """Who is signed in, as a link that signs out."""
    return html.A(f"{name} · {t('sign_out', lang)}", href="/logout", className="nav-link who")


def _card(title: str, value: str, detail: list | str, *, tone: str = "") -> html.Div:
    return html.Div([html.Div(title, className="kpi-title"), html.Div(value, className="kpi-value"),
                     html.Div(detail, className="kpi-detail")], className=f"kpi {tone}".strip())


def _chip(text: str, colour: str) -> html.Span:
    return html.Span(text, className="chip", style={"borderColor": colour, "color": colour})


def _unit_key(kind: str) -> html.Span:
    """The swatch of a unit class as the map draws it: a dot in its kind colour, ringed when
    responding, black in a white ring when silent."""
    if kind == "silent":
        style = {"background": SILENT_COLOUR, "borderColor": HALO_COLOURS["silent"]}
    elif kind == "responding":
        style = {"background": "transparent", "borderColor": HALO_COLOURS["responding"]}
    else:
        return html.Span(className="key dot", style={"background": KIND_COLOURS[kind]}, **{"data-unit-class": kind})
    return html.Span(className="key dot ring", style=style, **{"data-unit-class": kind})


def _unit_chip(text: str, kind: str | None) -> html.Span:
    return html.Span([_unit_key(kind), text] if kind else text, className="chip unit-chip")


def kpi_strip(k: Kpis, *, lang: str, timezone: str, lookback_h: float) -> list[html.Div]:
    """The strip of key figures across the top of the wall."""
    pct = k.segments_covered_pct
    checkpoint_chips = [
        _chip(f"{t('line_n', lang, n=line)} {staffed}/{total}", LINE_COLOURS[line])
        for line, (staffed, total) in sorted(k.checkpoints.items())
    ]
    incident_chips = [
        _chip(f"{t('severity_n', lang, n=sev)} {n}", SEVERITY_COLOURS[sev])
        for sev, n in sorted(k.incidents_open.items(), reverse=True)
    ]
    return [
        # on duty, responding and silent are disjoint: the chips add up to the figure
        _card(t("units", lang), str(k.units_on_duty + k.units_responding + k.units_silent), [
            _unit_chip(f"{t('on_duty', lang)} {k.units_on_duty}", None),
            _unit_chip(f"{t('responding', lang)} {k.units_responding}", "responding"),
            _unit_chip(f"{t('silent', lang)} {k.units_silent}", "silent"),
        ], tone="bad" if k.units_silent else ""),
        _card(t("line1", lang), "—" if pct is None else f"{pct:.0f}%",
              t("segments_of", lang, covered=k.segments_covered, total=k.segments_total),
              tone="bad" if pct is not None and pct < 80 else "good" if pct is not None else ""),
        _card(t("checkpoints", lang), str(sum(s for s, _ in k.checkpoints.values())),
              checkpoint_chips or t("none", lang)),
        _card(t("grids_overdue", lang), str(k.grids_overdue),
              t("grids_unknown", lang, n=k.grids_unknown, total=k.grids_total, h=f"{lookback_h:g}"),
              tone="bad" if k.grids_overdue else ""),
        _card(t("incidents_open", lang), str(sum(k.incidents_open.values())), incident_chips or t("none", lang),
              tone="bad" if k.incidents_open.get(4) else ""),
        _card(t("newest_fix", lang), local_time(k.status.newest_fix, timezone, "%H:%M:%S"),
              local_time(k.status.newest_fix, timezone, "%Y-%m-%d"), tone="bad" if k.status.stale else ""),
    ]


def banner(kind: str | None, *, lang: str, **fields: str) -> tuple[str, str]:
    """The banner text and CSS class for a kind (``db``, ``db_kept``, ``feed_retrying``, ``empty``,
    ...; see the ``banner_*`` strings) or none; ``fields`` fill its text."""
    if kind is None:
        return "", "banner hidden"
    return t(f"banner_{kind}", lang, **fields), f"banner banner-{kind.split('_')[0]}"


def scope_options(tree: pd.DataFrame, *, lang: str, within: str | None) -> list[dict[str, str]]:
    """Dropdown options for the command-unit tree (only ``within`` and below it, when given), indented by depth."""
    if within is not None:
        tree = subtree(tree, within)
    names = tree["name"] if lang == "zh" else tree["name_en"]
    levels = tree["level"].map({lvl: t(f"level_{lvl}", lang) for lvl in ("prefecture", "county", "township",
                                                                          "station")})
    labels = tree["depth"].map({depth: _INDENT * depth for depth in range(4)}) + names + " · " + levels
    return pd.DataFrame({"label": labels, "value": tree["code"]}).to_dict("records")


def layer_options(layers: tuple[Layer, ...], *, lang: str) -> list[dict[str, str]]:
    """Checklist options for the layer toggles, in catalog order, topmost first."""
    return [{"label": layer.title[lang], "value": layer.id} for layer in reversed(layers)]


def _swatch_key(layer: Layer, swatch: Swatch) -> html.Span:
    """A key drawn in the swatch's colour, naming the style layer and the class it stands for (the
    wall's test compares it with the paint of the style the map loaded)."""
    return html.Span(className=f"key {swatch.shape}", style={"background": swatch.colour}, **{
        "data-style-layer": style_layer_ids(layer, labels=False)[[s["part"] for s in layer.styles].index(swatch.part)],
        "data-paint": swatch.paint, "data-prop": swatch.prop or "", "data-value": json.dumps(swatch.value)})


def legend(*, lang: str, lookback_h: float, limits_h: dict[str, float], silent_after_s: float) -> html.Div:
    """The colour keys of units (from the live traces' colours) and of the catalog layers that
    declare a legend (from the same entries that style them)."""
    def row(key: html.Span, text: str) -> html.Div:
        return html.Div([key, html.Span(text)], className="key-row")

    def label(key: str) -> str:
        return t(key, lang, h=f"{lookback_h:g}") if key == "no_visit" else t(key, lang)

    sections = [html.Div(t("legend_units", lang), className="legend-title"), html.Div(className="legend-keys", children=[
        *[row(_unit_key(kind), t(f"kind_{kind}", lang)) for kind in KIND_COLOURS],
        row(_unit_key("responding"), t("responding_key", lang)),
        row(_unit_key("silent"), t("silent_key", lang, m=f"{silent_after_s / 60:g}")),
        row(html.Span(className="key dot ring", style={"background": "transparent", "borderColor": FOUND_COLOUR}),
            t("found_key", lang)),
    ])]
    for layer_id, (title, columns) in LEGEND_LAYERS.items():
        layer = get_layer(layer_id)
        sections += [html.Div(t(title, lang), className="legend-title"), html.Div(
            className="legend-keys", style={"gridTemplateColumns": f"repeat({columns}, 1fr)"}, children=[
                row(_swatch_key(layer, swatch), label(swatch.label)) for swatch in layer.legend])]
    limits = ", ".join(f"{t(f'zone_{kind}', lang)} {hours:g} h" for kind, hours in limits_h.items())
    sections.append(html.Div(t("legend_window", lang, h=f"{lookback_h:g}", limits=limits), className="legend-note"))
    return html.Div(sections, className="legend", id="wall-legend")


def clock(*, lang: str, timezone: str) -> html.Div:
    """The site's clock and the age of the picture; ``assets/wall.js`` ticks both every second."""
    return html.Div(className="clock", id="wall-clock", **{
        "data-timezone": timezone, "data-lang": lang,
        "data-updated": t("updated_ago", lang, n="{n}"), "data-not-yet": t("updated_not_yet", lang)}, children=[
        html.Span(id="wall-clock-time", className="clock-time"),
        html.Span(id="wall-updated", className="clock-updated"),
    ])


def hover_strings(*, lang: str, lookback_h: float, limits_h: dict[str, float]) -> str:
    """What the hover panel needs to show places in words, as JSON: field and status labels, each
    zone kind by its limit (a place's limit is its zone's), and the look-back window."""
    fields = {key.removeprefix("field_"): text[lang] for key, text in STRINGS.items() if key.startswith("field_")}
    statuses = {s: t(s, lang) for s in ("fresh", "due", "overdue", "patrolled", "watched")}
    statuses["unknown"] = t("no_visit", lang, h=f"{lookback_h:g}")
    return json.dumps({
        "fields": fields, "statuses": statuses, "lookback_h": lookback_h,
        "zones": {f"{hours:g}": t(f"zone_{kind}", lang) for kind, hours in limits_h.items()},
        "segment": t("gap_segment", lang, km_from="{km_from}", km_to="{km_to}"),
        "not_overdue": t("not_overdue", lang), "more_than": t("more_than_h", lang, h="{h}"),
        "dur_hm": t("dur_hm", lang, h="{h}", m=0).replace("00", "{m}"), "dur_m": t("dur_m", lang, m="{m}"),
        "yes": t("yes", lang), "no": t("no", lang),
    }, ensure_ascii=False)
