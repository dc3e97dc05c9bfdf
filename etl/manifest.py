"""The input manifest: which file is which layer or feed, and how to read it.

A folder of inputs carries a ``manifest.json``::

    {"format": "gridwatch-manifest/1", "timezone": "Asia/Shanghai",
     "exported_at": "2026-11-20T08:00:00+08:00",
     "files": [{"path": "grids/civil.shp", "target": "grid_source",
                "department": "civil_affairs", "crs": "EPSG:4542",
                "encoding": "gbk", "columns": {"source_code": "WGBM"}}, ...]}

``columns`` maps a target field to the file's column name; fields not named
keep their own name. Every problem is collected and reported at once.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gridwatch.errors import InputError

__all__ = ["TARGETS", "FileEntry", "Manifest", "read_manifest"]

FORMAT = "gridwatch-manifest/1"

# Target layer -> (required fields, optional fields).
TARGETS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "command_unit": (("code", "name", "level"), ("name_en", "parent_code")),
    "police_area": (("code", "station_code"), ("name", "name_en")),
    "grid_source": (("source_code",), ("name", "township_code", "households", "population")),
    "zone": (("kind",), ("name",)),
    "defence_line": (("line_no",), ("name",)),
    "checkpoint": (("code", "line_no", "staffed"), ("name", "kind")),
    "road": (("class",), ("code", "name")),
    "river": ((), ("name",)),
    "settlement": (("code", "name", "kind"), ("name_en", "households", "population")),
    "port": (("code",), ("name",)),
    "sensor": (("code", "kind", "range_m", "up"), ("fov_deg", "azimuth_deg")),
    "unit": (("callsign", "kind", "command_unit_code", "status"), ("area_code", "shift_start", "shift_end")),
    "position": (("callsign", "ts", "lon", "lat"), ("speed_kmh", "heading", "accuracy_m")),
    "incident": (
        ("source_id", "kind", "severity", "status", "reported_at", "lon", "lat"),
        ("dispatched_at", "on_scene_at", "closed_at", "note"),
    ),
}
FEEDS = ("position", "incident")
# Companion files a format reads beside the named one, by the named file's suffix.
_COMPANIONS = {
    ".shp": (".shx", ".dbf", ".prj", ".cpg", ".qpj", ".sbn", ".sbx", ".qix", ".shp.xml"),
    ".tab": (".dat", ".map", ".id", ".ind"),
    ".mif": (".mid",),
}
TABLE_TARGETS = ("unit",)


@dataclass(frozen=True)
class FileEntry:
    """One input file of the manifest."""

    path: Path
    target: str
    crs: str | None = None
    encoding: str | None = None
    layer: str | None = None
    department: str | None = None
    callsign: str | None = None
    timezone: str | None = None
    columns: dict[str, str] = field(default_factory=dict)

    @property
    def format(self) -> str:
        """The file's format from its name: csv, gpx, or vector (any OGR format)."""
        suffix = self.path.suffix.lower()
        return {".csv": "csv", ".gpx": "gpx"}.get(suffix, "vector")

    def source_column(self, target_field: str) -> str:
        """The file's column that holds ``target_field``."""
        return self.columns.get(target_field, target_field)

    @property
    def source(self) -> str:
        """How the quarantine and the ledger name this input: the path, and the layer when one is chosen."""
        return str(self.path) if self.layer is None else f"{self.path}|layername={self.layer}"

    def parts(self) -> list[Path]:
        """The files that make up the dataset: the file itself and the companions its format reads
        (a Shapefile's .shx, .dbf, .prj, .cpg, ...; a GeoPackage's write-ahead log)."""
        companions = _COMPANIONS.get(self.path.suffix.lower())
        if not companions:
            wal = self.path.with_name(self.path.name + "-wal")
            return [self.path, wal] if wal.exists() else [self.path]
        siblings = {p.name.lower(): p for p in self.path.parent.iterdir()}
        stem = self.path.stem.lower()
        return [self.path, *(siblings[stem + ext] for ext in companions if stem + ext in siblings)]

    def options(self) -> dict[str, object]:
        """The options that change what loading the file gives (part of its load key)."""
        return {"target": self.target, "crs": self.crs, "encoding": self.encoding, "layer": self.layer,
                "department": self.department, "callsign": self.callsign, "timezone": self.timezone,
                "columns": self.columns}


@dataclass(frozen=True)
class Manifest:
    """A folder of inputs and what each file is."""

    root: Path
    files: tuple[FileEntry, ...]
    timezone: str = "Asia/Shanghai"
    exported_at: datetime | None = None
    bbox: tuple[float, float, float, float] | None = None

    def for_target(self, *targets: str) -> list[FileEntry]:
        """The entries loading into any of ``targets``, in manifest order."""
        return [f for f in self.files if f.target in targets]

    def feeds_since(self, moment: datetime) -> Manifest:
        """This manifest without the feed files (positions, incidents) unchanged since ``moment``.

        Reference layers stay: they load as a whole per target, and unchanged
        ones are skipped by content anyway.
        """
        since = moment.timestamp()
        kept = tuple(f for f in self.files if f.target not in FEEDS or f.path.stat().st_mtime >= since)
        return dataclasses.replace(self, files=kept)


def read_manifest(folder: Path) -> Manifest:
    """Read and check ``folder/manifest.json``; raise InputError listing every problem."""
    folder = Path(folder)
    path = folder / "manifest.json" if folder.is_dir() else folder
    if not path.exists():
        raise InputError(f"{path} does not exist: an input folder needs a manifest.json (see README)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path} is not valid JSON: {exc}") from None
    problems: list[str] = []
    if raw.get("format") != FORMAT:
        problems.append(f"format is {raw.get('format')!r} but is expected to be {FORMAT!r}")
    timezone = raw.get("timezone", "Asia/Shanghai")
    _check_zone(timezone, "timezone", problems)
    exported_at = None
    if raw.get("exported_at"):
        try:
            exported_at = datetime.fromisoformat(raw["exported_at"])
            if exported_at.tzinfo is None:
                exported_at = exported_at.replace(tzinfo=ZoneInfo(timezone))
        except (ValueError, ZoneInfoNotFoundError):
            problems.append(f"exported_at {raw['exported_at']!r} is not an ISO 8601 time")
    entries = []
    for i, item in enumerate(raw.get("files") or []):
        entry = _entry(path.parent, i, item, problems)
        if entry:
            entries.append(entry)
    if not entries and not problems:
        problems.append("lists no files")
    if problems:
        raise InputError(f"{path}: " + "; ".join(problems))
    bbox = tuple(raw["bbox"]) if raw.get("bbox") else None
    return Manifest(path.parent, tuple(entries), timezone, exported_at, bbox)


def _check_zone(name: str | None, what: str, problems: list[str]) -> None:
    if name is None:
        return
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        problems.append(f"{what} {name!r} is not a known time zone (e.g. 'Asia/Shanghai')")


def _entry(root: Path, i: int, item: dict, problems: list[str]) -> FileEntry | None:
    where = f"files[{i}]"
    target = item.get("target")
    if target not in TARGETS:
        problems.append(f"{where}: target is {target!r} but is expected to be in {sorted(TARGETS)}")
        return None
    if not item.get("path"):
        problems.append(f"{where}: no path")
        return None
    path = (root / item["path"]).resolve()
    if not path.exists():
        problems.append(f"{where}: {item['path']} does not exist")
    if target == "grid_source" and not item.get("department"):
        problems.append(f"{where}: a grid_source file needs its department")
    _check_zone(item.get("timezone"), f"{where}: timezone", problems)
    columns = dict(item.get("columns") or {})
    required, optional = TARGETS[target]
    unknown = set(columns) - set(required) - set(optional)
    if unknown:
        problems.append(f"{where}: columns maps unknown fields {sorted(unknown)}; allowed {sorted(required + optional)}")
    return FileEntry(
        path=path,
        target=target,
        crs=item.get("crs"),
        encoding=item.get("encoding"),
        layer=item.get("layer"),
        department=item.get("department"),
        callsign=item.get("callsign"),
        timezone=item.get("timezone"),
        columns=columns,
    )
