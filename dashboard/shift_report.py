"""The shift report: one PDF of a command unit's area over a shift, in English or Chinese.

Its parts: the key figures (:class:`gridwatch.layers.evidence.ShiftSummary`), a map of the
area at the end of the shift (grids by coverage, border segments by status, the incidents),
the worst coverage gaps at the end of the shift (:func:`gridwatch.layers.gaps.gap_list`),
the incidents with their handling times, the incidents handled in each hour, and the alerts
with who acknowledged them. Every label comes from :mod:`gridwatch.dashboard.i18n`; all text
is set in the TrueType CJK font the system provides (:func:`gridwatch.system.report_font_file`),
embedded in the file, so Chinese names read right in both languages.
"""
from __future__ import annotations

import io
import json
import math
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import geopandas as gpd
import pandas as pd
import sqlalchemy as sa
from matplotlib.figure import Figure
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.platypus import Image, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from gridwatch.dashboard.dispatch_panels import alert_text, duration, gap_labels, gap_times
from gridwatch.dashboard.i18n import lang_of, t
from gridwatch.errors import GridwatchError
from gridwatch.layers.catalog import COVERAGE_COLOURS, SEGMENT_COLOURS, SEVERITY_COLOURS
from gridwatch.layers.evidence import (
    ShiftSummary,
    Window,
    check_target,
    position_counts,
    read_evidence,
    summarise,
)
from gridwatch.layers.gaps import gap_list
from gridwatch.settings import Settings
from gridwatch.system import REPORT_FONT_QUERY, report_font, report_font_file

__all__ = ["shift_report", "write_shift_report", "FONT_NAME", "ROWS"]

FONT_NAME = "gridwatch-cjk"
ROWS = 40  # rows of each table; the rest is counted (the evidence export holds everything)
GAPS = 10
MAP_INCHES = (7.0, 5.0)
_WIDTH = A4[0] - 30 * mm


def _font() -> str:
    """Register the report font once; a missing font names the package that brings it."""
    if FONT_NAME not in pdfmetrics.getRegisteredFontNames():
        path = report_font_file()
        if path is None:
            package = report_font().package
            raise GridwatchError(f"the shift report needs the font {REPORT_FONT_QUERY!r}: install {package} "
                                 f"(sudo apt-get install {package})")
        pdfmetrics.registerFont(TTFont(FONT_NAME, str(path), subfontIndex=0))
    return FONT_NAME


def _styles(font: str) -> dict[str, ParagraphStyle]:
    base = ParagraphStyle("body", fontName=font, fontSize=9, leading=12, wordWrap="CJK")
    return {"body": base,
            "title": ParagraphStyle("title", parent=base, fontSize=18, leading=24),
            "h2": ParagraphStyle("h2", parent=base, fontSize=12, leading=16, spaceBefore=8, spaceAfter=4),
            "cell": ParagraphStyle("cell", parent=base, fontSize=8, leading=10)}


def _map_png(frames: dict[str, gpd.GeoDataFrame], bounds: tuple[float, float, float, float]) -> bytes:
    """The area at the end of the shift: grids by coverage, segments by status, incidents by severity."""
    west, south, east, north = bounds
    fig = Figure(figsize=MAP_INCHES, dpi=150)
    ax = fig.subplots()
    grids, segments, incidents = frames["grids"], frames["border_segments"], frames["incidents"]
    tolerance = max(east - west, north - south) / 2000.0
    if len(grids):
        shapes = grids.geometry.simplify(tolerance)
        fill = grids["status"].map(COVERAGE_COLOURS).fillna(COVERAGE_COLOURS["unknown"])
        gpd.GeoSeries(shapes, crs=grids.crs).plot(ax=ax, color=fill.to_list(), edgecolor="#334155", linewidth=0.2,
                                                   alpha=0.75)
    if len(segments):
        line = segments["status"].map(SEGMENT_COLOURS).fillna(SEGMENT_COLOURS["unknown"])
        segments.plot(ax=ax, color=line.to_list(), linewidth=2.2)
    if len(incidents):
        incidents.plot(ax=ax, color=incidents["severity"].map(SEVERITY_COLOURS).to_list(), markersize=18,
                       edgecolor="#0f172a", linewidth=0.5, zorder=5)
    ax.set_xlim(west, east)
    ax.set_ylim(south, north)
    ax.set_aspect(1.0 / max(math.cos(math.radians((south + north) / 2.0)), 0.1))
    ax.set_axis_off()
    fig.subplots_adjust(0, 0, 1, 1)
    out = io.BytesIO()
    fig.savefig(out, format="png", facecolor="white")
    return out.getvalue()


def _when(ts: object, zone: str, fmt: str = "%m-%d %H:%M") -> str:
    return "—" if ts is None or pd.isna(ts) else pd.Timestamp(ts).tz_convert(zone).strftime(fmt)


def _minutes(value: float | None, lang: str) -> str:
    return "—" if value is None or pd.isna(value) else duration(value * 60.0, lang)


def _table(head: list[str], rows: list[list[str]], style: ParagraphStyle, widths: list[float] | None = None,
           *, more: int = 0, lang: str = "en") -> list:
    cells = [[Paragraph(str(c), style) for c in row] for row in [head, *rows]]
    table = Table(cells, colWidths=widths, repeatRows=1, hAlign="LEFT")
    table.setStyle(TableStyle([("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e2e8f0")),
                               ("GRID", (0, 0), (-1, -1), 0.25, colors.HexColor("#94a3b8")),
                               ("VALIGN", (0, 0), (-1, -1), "TOP")]))
    return [table] + ([Paragraph(t("report_more", lang, n=more), style)] if more else [])


def _kpis(summary: ShiftSummary, lang: str) -> list[list[str]]:
    covered = (f"{summary.segments_covered} / {summary.segments_total}"
               + (f" ({100.0 * summary.segments_covered / summary.segments_total:.0f} %)" if summary.segments_total else ""))
    return [
        [t("kpi_units", lang), f"{summary.units:,}"], [t("kpi_fixes", lang), f"{summary.fixes:,}"],
        [t("kpi_segments", lang), covered],
        [t("kpi_grids", lang), f"{summary.grids_overdue:,} / {summary.grids_never:,} ({summary.grids_total:,})"],
        [t("kpi_reported", lang), f"{summary.reported:,}"], [t("kpi_closed", lang), f"{summary.closed:,}"],
        [t("kpi_rate", lang), f"{summary.handled_per_hour:.1f}"],
        [t("kpi_handling", lang), f"{_minutes(summary.handling_median_min, lang)} / "
                                  f"{_minutes(summary.handling_p90_min, lang)}"],
        [t("kpi_alerts", lang), f"{summary.alerts_raised:,} / {summary.alerts_acknowledged:,}"],
        [t("kpi_ack", lang), _minutes(summary.ack_median_min, lang)],
    ]


def shift_report(engine: sa.Engine, win: Window, *, settings: Settings, lang: str = "en") -> bytes:
    """The shift report of ``win`` as PDF bytes."""
    lang, zone = lang_of(lang), settings.timezone
    styles = _styles(_font())
    frames = read_evidence(engine, win)
    fixes, units = position_counts(engine, win)
    summary = summarise(frames, win, fixes=fixes, units=units)
    gaps = gap_list(engine, settings, now=win.end, unit=win.area.code, limit=GAPS)
    lookback_start = win.end - timedelta(hours=settings.coverage_lookback_h)
    incidents, alerts = frames["incidents"], frames["alerts"]
    name = win.area.name if lang == "zh" else win.area.name_en
    cell, body, h2 = styles["cell"], styles["body"], styles["h2"]

    story = [
        Paragraph(f"{t('report_title', lang)} · {name} ({win.area.code})", styles["title"]),
        Paragraph(f"{t('report_area', lang)}: {name} · {t(f'level_{win.area.level}', lang)} · "
                  f"{t('report_window', lang)}: {_when(win.start, zone, '%Y-%m-%d %H:%M')} – "
                  f"{_when(win.end, zone, '%Y-%m-%d %H:%M')} ({win.hours:g} h) · "
                  f"{t('report_made', lang, t=_when(datetime.now(timezone.utc), zone, '%Y-%m-%d %H:%M'))}", body),
        Spacer(1, 4 * mm),
        Paragraph(t("report_kpis", lang), h2),
        *_table([t("report_kpis", lang), ""], _kpis(summary, lang), cell, [_WIDTH * 0.5, _WIDTH * 0.3]),
        Paragraph(t("report_map", lang), h2),
        Image(io.BytesIO(_map_png(frames, win.area.bounds)), width=_WIDTH, height=_WIDTH * MAP_INCHES[1] / MAP_INCHES[0]),
        Paragraph(t("report_gaps", lang), h2),
        *_table([t("col_place", lang), t("col_zone", lang), t("col_overdue", lang), t("col_last_visit", lang)], [
            [label, t(f"zone_{g.zone_kind}", lang) if isinstance(g.zone_kind, str) else "—",
             *gap_times(g, lang=lang, timezone=zone, window_start=lookback_start)]
            for label, g in zip(gap_labels(gaps, lang), gaps.itertuples())], cell),
        Paragraph(t("report_incidents", lang), h2),
        *_table([t("col_incident", lang), t("col_severity", lang), t("col_status", lang), t("col_reported", lang),
                 t("col_closed", lang), t("col_handling", lang)], [
            [f"{i.source_id} · {i.kind}", t("severity_n", lang, n=i.severity), t(f"incident_{i.status}", lang),
             _when(i.reported_at, zone), _when(i.closed_at, zone), _minutes(i.handling_min, lang)]
            for i in incidents.head(ROWS).itertuples()], cell, more=max(len(incidents) - ROWS, 0), lang=lang),
        Paragraph(f"{t('report_per_hour', lang)}: {summary.handled_per_hour:.1f}", h2),
        *_table([t("col_hour", lang), t("col_handled", lang)],
                [[_when(hour, zone, "%m-%d %H:00"), str(n)] for hour, n in summary.handled_by_hour.items()], cell,
                [_WIDTH * 0.3, _WIDTH * 0.2]),
        Paragraph(t("report_alerts", lang), h2),
        *_table([t("col_severity", lang), t("col_raised", lang), t("col_alert", lang), t("col_acked", lang)], [
            [t("severity_n", lang, n=a.severity), _when(a.raised_at, zone), alert_text(a.kind, json.loads(a.detail), lang),
             t("acked_by", lang, who=a.acknowledged_by, t=_when(a.acknowledged_at, zone))
             if pd.notna(a.acknowledged_at) else t("not_acked", lang)]
            for a in alerts.head(ROWS).itertuples()], cell, [_WIDTH * 0.1, _WIDTH * 0.15, _WIDTH * 0.45, _WIDTH * 0.3],
            more=max(len(alerts) - ROWS, 0), lang=lang),
    ]
    out = io.BytesIO()
    SimpleDocTemplate(out, pagesize=A4, leftMargin=15 * mm, rightMargin=15 * mm, topMargin=15 * mm,
                      bottomMargin=15 * mm, title=f"{t('report_title', lang)} {win.area.code}",
                      author="gridwatch").build(story)
    return out.getvalue()


def write_shift_report(engine: sa.Engine, win: Window, path: Path, *, settings: Settings, lang: str = "en") -> int:
    """Write the shift report of ``win`` to ``path`` (moved into place when whole); returns its size in bytes."""
    path = Path(path)
    check_target(path)
    data = shift_report(engine, win, settings=settings, lang=lang)
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")
    try:
        partial.write_bytes(data)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return len(data)
