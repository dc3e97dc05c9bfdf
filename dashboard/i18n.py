"""Every string the dashboard shows, in English and Chinese, from this one table."""
from __future__ import annotations

__all__ = ["LANGS", "STRINGS", "t", "lang_of"]

LANGS = ("en", "zh")

STRINGS: dict[str, dict[str, str]] = {
    "app_title": {"en": "gridwatch · situation wall", "zh": "网格边防态势 · 指挥大屏"},
    "scope_all": {"en": "Whole jurisdiction", "zh": "全辖区"},
    "scope_placeholder": {"en": "Command unit…", "zh": "选择指挥单位…"},
    "other_lang": {"en": "中文", "zh": "English"},
    "layers": {"en": "Layers", "zh": "图层"},
    "units": {"en": "Units", "zh": "警力"},
    "on_duty": {"en": "on duty", "zh": "在岗"},
    "responding": {"en": "responding", "zh": "处警中"},
    "silent": {"en": "silent", "zh": "失联"},
    "line1": {"en": "Line 1 covered", "zh": "一线封控覆盖"},
    "segments_of": {"en": "{covered} of {total} segments", "zh": "{total} 段中 {covered} 段"},
    "checkpoints": {"en": "Checkpoints staffed", "zh": "检查站在岗"},
    "line_n": {"en": "L{n}", "zh": "{n}线"},
    "grids_overdue": {"en": "Grids overdue", "zh": "超时未巡网格"},
    "grids_unknown": {"en": "{n} never visited · {total} grids", "zh": "{n} 个未巡 · 共 {total} 个网格"},
    "incidents_open": {"en": "Open incidents", "zh": "未结警情"},
    "severity_n": {"en": "S{n}", "zh": "{n}级"},
    "newest_fix": {"en": "Newest fix", "zh": "最新定位"},
    "none": {"en": "none", "zh": "无"},
    "banner_empty": {"en": "No data yet — load the region and start the feeds", "zh": "暂无数据 — 请导入辖区数据并接入定位"},
    "banner_stale": {"en": "Data stale since {since}", "zh": "数据自 {since} 起未更新"},
    "banner_db_down": {"en": "Database unreachable — retrying", "zh": "数据库无法连接 — 正在重试"},
    "legend_units": {"en": "Units by kind", "zh": "警力类型"},
    "kind_foot": {"en": "foot patrol", "zh": "徒步巡逻"},
    "kind_vehicle": {"en": "vehicle patrol", "zh": "车巡"},
    "kind_drone": {"en": "drone", "zh": "无人机"},
    "kind_post": {"en": "fixed post", "zh": "固定哨位"},
    "kind_checkpoint": {"en": "checkpoint crew", "zh": "卡点执勤"},
    "status_on_duty": {"en": "on duty", "zh": "在岗"},
    "status_responding": {"en": "responding", "zh": "处警中"},
    "trail": {"en": "trail", "zh": "轨迹"},
    "heading": {"en": "heading", "zh": "航向"},
    "legend_coverage": {"en": "Coverage", "zh": "覆盖状态"},
    "fresh": {"en": "fresh", "zh": "已覆盖"},
    "due": {"en": "due", "zh": "将到期"},
    "overdue": {"en": "overdue", "zh": "超时"},
    "unknown": {"en": "never visited", "zh": "未巡"},
    "patrolled": {"en": "patrolled", "zh": "已巡"},
    "watched": {"en": "watched", "zh": "监控中"},
    "level_prefecture": {"en": "prefecture", "zh": "地区"},
    "level_county": {"en": "county", "zh": "县"},
    "level_township": {"en": "township", "zh": "乡镇"},
    "level_station": {"en": "station", "zh": "派出所"},
}


def lang_of(value: str | None) -> str:
    """The UI language for a ``?lang=`` value: ``zh`` or (by default) ``en``."""
    return value if value in LANGS else "en"


def t(key: str, lang: str, **values: object) -> str:
    """The string ``key`` in ``lang``, with ``{placeholders}`` filled from ``values``."""
    return STRINGS[key][lang_of(lang)].format(**values)
