"""The benchmarks' own guard: figures are measured only on a sample the etl run loaded whole."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa

from gridwatch.bench._harness import load_sample
from gridwatch.errors import GridwatchError
from gridwatch.etl.manifest import read_manifest
from gridwatch.settings import Settings


def test_a_sample_whose_run_leaves_a_job_undone_is_not_measured(clean_db: sa.Engine, small_sample: Path,
                                                                   tmp_path: Path) -> None:
    folder = tmp_path / "sample"
    shutil.copytree(small_sample, folder)
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    shapefile = next(f for f in manifest["files"] if f["path"].endswith(".shp"))
    shapefile["crs"] = "EPSG:4549"  # a Gauss-Krüger zone 21 degrees east of the data: refused
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(GridwatchError, match=r"left reference, fuse-grids, .* undone.*civil_affairs\.shp: refused"):
        load_sample(clean_db, read_manifest(folder), settings=Settings())
