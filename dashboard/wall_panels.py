"""The wall's panels as plain functions of query results: KPI strip, banner, options."""
from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pandas as pd
from dash import html

from gridwatch.dashboard.i18n import t
from gridwatch.layers.catalog import COVERAGE_COLOURS, LINE_COLOURS, SEGMENT_COLOURS, SEVERITY_COLOURS, Layer
from gridwatch.layers.queries import Kpis, subtree

__all__ = ["kpi_strip", "banner", "scope_options", "layer_options", "local_time", "legend", "signed_in_as"]

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


def kpi_strip(k: Kpis, *, lang: str, timezone: str) -> list[html.Div]:
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
        _card(t("units", lang), str(k.units_on_duty + k.units_responding), [
            _chip(f"{t('on_duty', lang)} {k.units_on_duty}", "#e2e8f0"),
            _chip(f"{t('responding', lang)} {k.units_responding}", "#f59e0b"),
            _chip(f"{t('silent', lang)} {k.units_silent}", "#ef4444" if k.units_silent else "#64748b"),
        ]),
        _card(t("line1", lang), "—" if pct is None else f"{pct:.0f}%",
              t("segments_of", lang, covered=k.segments_covered, total=k.segments_total),
              tone="bad" if pct is not None and pct < 80 else "good" if pct is not None else ""),
        _card(t("checkpoints", lang), str(sum(s for s, _ in k.checkpoints.values())),
              checkpoint_chips or t("none", lang)),
        _card(t("grids_overdue", lang), str(k.grids_overdue),
              t("grids_unknown", lang, n=k.grids_unknown, total=k.grids_total),
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


def legend(*, lang: str) -> html.Div:
    """The colour keys of units, coverage and the defence lines."""
    from gridwatch.dashboard.live_map import KIND_COLOURS

    def row(colour: str, text: str, shape: str = "dot") -> html.Div:
        return html.Div([html.Span(className=f"key {shape}", style={"background": colour}), text], className="key-row")

    return html.Div([
        html.Div(t("legend_units", lang), className="legend-title"),
        *[row(colour, t(f"kind_{kind}", lang)) for kind, colour in KIND_COLOURS.items()],
        row("#f59e0b", t("responding", lang)), row("#ef4444", t("silent", lang)),
        html.Div(t("legend_coverage", lang), className="legend-title"),
        *[row(COVERAGE_COLOURS[s], t(s, lang), "box") for s in ("fresh", "due", "overdue", "unknown")],
        *[row(SEGMENT_COLOURS[s], t(s, lang), "bar") for s in ("patrolled", "watched")],
        *[row(colour, t("line_n", lang, n=n), "bar") for n, colour in LINE_COLOURS.items()],
    ], className="legend")
