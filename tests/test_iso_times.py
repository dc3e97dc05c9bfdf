"""Times written with a trailing Z (CoT, Traccar JSON, manifests, the command line) are read as UTC,
on the Python the package declares it needs (``datetime.fromisoformat`` reads ``Z`` from 3.11)."""
from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from datetime import datetime, timezone
from pathlib import Path

from packaging.specifiers import SpecifierSet

from gridwatch.etl.ingest._fix import parse_time
from gridwatch.etl.manifest import FORMAT, read_manifest

REPO = Path(__file__).resolve().parents[1]
UTC_TIME = datetime(2026, 11, 20, 8, 0, tzinfo=timezone.utc)


def test_requires_python_admits_no_python_that_cannot_read_z() -> None:
    declared = SpecifierSet(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"])
    assert "3.10.12" not in declared and "3.11.0" in declared
    assert sys.version_info >= (3, 11)


def test_a_fix_time_ending_in_z() -> None:
    assert parse_time("2026-11-20T08:00:00Z", naive_is_utc=False) == UTC_TIME
    assert parse_time("2026-11-20T08:00:00.250Z", naive_is_utc=False).microsecond == 250_000


def test_a_manifest_exported_at_ending_in_z(tmp_path: Path) -> None:
    (tmp_path / "units.csv").write_text("callsign,kind\n")
    (tmp_path / "manifest.json").write_text(json.dumps({
        "format": FORMAT, "exported_at": "2026-11-20T08:00:00Z",
        "files": [{"target": "unit", "path": "units.csv"}]}))
    assert read_manifest(tmp_path).exported_at == UTC_TIME


def test_the_command_line_reads_z(cli_env: dict[str, str], tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "gridwatch.cli", "etl", "coverage", "--as-of", "2026-11-20T08:00:00Z"],
                            capture_output=True, text=True, env=cli_env, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "coverage rebuilt", result
