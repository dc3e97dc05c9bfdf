"""The job runner: every ETL job in order on a folder of inputs.

``etl run --input DIR`` reads the folder's manifest and runs: reference layers,
units, grid fusion, positions, incidents, coverage, defence lines. Each job
is recorded in ``etl_run`` and is idempotent: its loads are transactional and
files already loaded are skipped, so a run killed at any moment and run again
ends with the same tables as an uninterrupted run.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone

import sqlalchemy as sa

from gridwatch.errors import GridwatchError
from gridwatch.etl.coverage import derive_coverage
from gridwatch.etl.defence import derive_defence
from gridwatch.etl.fuse_grids import fuse_grid_sources
from gridwatch.etl.incidents import load_incidents
from gridwatch.etl.manifest import Manifest
from gridwatch.etl.positions import load_positions
from gridwatch.etl.reference import load_reference
from gridwatch.etl.runlog import RunCounts, job_run
from gridwatch.etl.units import load_units
from gridwatch.settings import Settings

__all__ = ["JOBS", "JobResult", "run_manifest", "format_summary"]

# Advisory lock key held by a run: one `etl run` at a time per database.
RUN_LOCK = 0x67726964


@dataclass
class JobResult:
    """How one job of a run ended."""

    job: str
    rows_in: int
    rows_loaded: int
    rows_rejected: int
    seconds: float


@dataclass(frozen=True)
class RunContext:
    """What every job of one run gets."""

    engine: sa.Engine
    manifest: Manifest
    settings: Settings
    as_of: datetime | None
    reference_time: datetime | None
    progress: bool


def _reference(ctx: RunContext, counts: RunCounts) -> None:
    load_reference(ctx.engine, ctx.manifest, settings=ctx.settings, counts=counts, progress=ctx.progress)


def _units(ctx: RunContext, counts: RunCounts) -> None:
    load_units(ctx.engine, ctx.manifest.for_target("unit"), settings=ctx.settings, counts=counts)


def _fuse(ctx: RunContext, counts: RunCounts) -> None:
    if ctx.manifest.for_target("grid_source"):
        fuse_grid_sources(ctx.engine, settings=ctx.settings, counts=counts, progress=ctx.progress)


def _positions(ctx: RunContext, counts: RunCounts) -> None:
    load_positions(
        ctx.engine, ctx.manifest.for_target("position"), settings=ctx.settings, counts=counts,
        default_timezone=ctx.manifest.timezone, reference_time=ctx.reference_time,
    )


def _incidents(ctx: RunContext, counts: RunCounts) -> None:
    load_incidents(
        ctx.engine, ctx.manifest.for_target("incident"), settings=ctx.settings, counts=counts,
        default_timezone=ctx.manifest.timezone, reference_time=ctx.reference_time,
    )


def _coverage(ctx: RunContext, counts: RunCounts) -> None:
    derive_coverage(ctx.engine, settings=ctx.settings, as_of=ctx.as_of)


def _defence(ctx: RunContext, counts: RunCounts) -> None:
    derive_defence(ctx.engine, settings=ctx.settings)


JOBS: tuple[tuple[str, Callable[[RunContext, RunCounts], None]], ...] = (
    ("reference", _reference),
    ("units", _units),
    ("fuse-grids", _fuse),
    ("positions", _positions),
    ("incidents", _incidents),
    ("coverage", _coverage),
    ("defence", _defence),
)


def run_manifest(
    engine: sa.Engine,
    manifest: Manifest,
    *,
    settings: Settings,
    as_of: datetime | None = None,
    progress: bool = False,
    on_job: Callable[[JobResult], None] | None = None,
) -> list[JobResult]:
    """Run every job on ``manifest``'s inputs; return what each did.

    ``as_of`` is the moment coverage is judged at (default: the manifest's
    ``exported_at`` for an export, else now); fixes later than the export
    time (or now) plus the tolerance are rejected as being in the future.
    """
    reference_time = manifest.exported_at
    ctx = RunContext(
        engine, manifest, settings,
        as_of or manifest.exported_at or datetime.now(timezone.utc),
        reference_time, progress,
    )
    results = []
    with _exclusive_run(engine):
        for name, job in JOBS:
            started = time.perf_counter()
            with job_run(engine, name, str(manifest.root)) as counts:
                job(ctx, counts)
            result = JobResult(name, counts.rows_in, counts.rows_loaded, counts.rows_rejected,
                               time.perf_counter() - started)
            results.append(result)
            if on_job:
                on_job(result)
    return results


@contextmanager
def _exclusive_run(engine: sa.Engine) -> Iterator[None]:
    """Hold the run lock for the whole run; close the log rows of an interrupted run."""
    with engine.connect() as lock:
        if not lock.execute(sa.text("SELECT pg_try_advisory_lock(:key)"), {"key": RUN_LOCK}).scalar():
            raise GridwatchError("another `etl run` is working on this database: wait for it to finish")
        with engine.begin() as conn:
            conn.execute(sa.text(
                "UPDATE etl_run SET status = 'failed', finished = now(), "
                "message = 'interrupted: the run stopped before this job finished' WHERE status = 'running'"
            ))
        try:
            yield
        finally:
            lock.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": RUN_LOCK})


def format_summary(results: list[JobResult]) -> str:
    """The run's summary table."""
    rows = [("job", "rows in", "loaded", "rejected", "seconds")]
    rows += [(r.job, f"{r.rows_in:,}", f"{r.rows_loaded:,}", f"{r.rows_rejected:,}", f"{r.seconds:.1f}") for r in results]
    total = sum(r.seconds for r in results)
    rows.append(("total", "", "", "", f"{total:.1f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join(
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows
    )
