"""``gridwatch demo``: the database, the sample region, and every ETL job on it."""
from __future__ import annotations

import shutil
from datetime import datetime, timezone
from pathlib import Path

import click

from etl.database import ensure_database
from etl.manifest import read_manifest
from etl.runner import format_summary, run_manifest
from gridwatch.settings import Settings

__all__ = ["prepare_demo", "sample_folder"]


def sample_folder(settings: Settings, *, seed: int, scale: str, progress: bool = True) -> Path:
    """Today's generated sample under the home folder, ending at the hour it was made
    (written once a day, atomically), so the demo shows current data."""
    from data import generate_sample

    end = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    folder = settings.home_dir / f"sample-{scale}-{seed}-{end:%Y%m%d}"
    if not (folder / "manifest.json").exists():
        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        generate_sample(partial, seed=seed, scale=scale, progress=progress, end=end)
        shutil.rmtree(folder, ignore_errors=True)
        partial.rename(folder)
    return folder


def prepare_demo(settings: Settings, *, seed: int = 1, scale: str = "prefecture") -> Path:
    """Start the database, generate the sample region once, and load it; return its folder."""
    click.echo("starting the database ...")
    engine = ensure_database(settings)
    click.echo(f"sample region ({scale}, seed {seed}) ...")
    folder = sample_folder(settings, seed=seed, scale=scale)
    click.echo(f"loading {folder} ...")
    results = run_manifest(engine, read_manifest(folder), settings=settings, progress=True)
    click.echo(format_summary(results))
    return folder
