"""Times written with a trailing Z (CoT, Traccar JSON, manifests, the command line) are read as UTC,
on the Python the package declares it needs (``datetime.fromisoformat`` reads ``Z`` from 3.11); a
file's times read the same whichever parser (Arrow's cast, pandas) reads them."""
from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
from packaging.specifiers import SpecifierSet

from gridwatch.etl._feeds import parse_times
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


def test_file_times_read_by_arrow_equal_pandas_and_an_impossible_date_is_unparseable() -> None:
    plain = ["2026-11-20T16:00:00+08:00", "2026-11-20T08:00:00Z", "2024-02-29T02:30:00-05:30"]
    other = ["2026-11-20T16:00:00.250+08:00", "2026-11-20 16:00:00+0800"]
    for column in (plain + other, plain + other + ["2026-02-30T00:00:00+08:00"]):
        got = parse_times(pd.Series(column), "Asia/Shanghai")
        expected = pd.to_datetime(pd.Series(column), format="ISO8601", utc=True, errors="coerce")
        assert got.tolist()[:5] == expected.tolist()[:5]
        assert got[0] == pd.Timestamp(UTC_TIME) and got[1] == pd.Timestamp(UTC_TIME)
    assert pd.isna(got.iloc[-1])
    local = parse_times(pd.Series(["2026-11-20T16:00:00", "2026-11-20T16:00:00+08:00"]), "Asia/Shanghai")
    assert local.tolist() == [pd.Timestamp(UTC_TIME)] * 2
