"""The job runner: every ETL job in order on a folder of inputs.

``etl run --input DIR`` reads the folder's manifest and runs: reference layers,
units, grid fusion, positions, incidents, coverage, defence lines. Each job
is recorded in ``etl_run`` and is idempotent: its loads are transactional and
files already loaded are skipped, so a run killed at any moment and run again
ends with the same tables as an uninterrupted one.

A file that cannot be read is refused and the run goes on: the job's other
files load, and so does every job that does not need what the refused file
would have given (:data:`JOBS` says what each job needs and makes; a job that
needs a refused or skipped thing is skipped, so nothing is derived from half
its inputs). Every file's outcome is reported; a run with a refusal ends in
error once everything it could do is done. A database lost mid-run stops the
run with a :class:`~gridwatch.errors.DatabaseError` saying what is kept.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone

import psycopg
import sqlalchemy as sa

from gridwatch.errors import DatabaseError, GridwatchError, InputError
from gridwatch.etl.coverage import derive_coverage
from gridwatch.etl.defence import derive_defence
from gridwatch.etl.fuse_grids import fuse_grid_sources
from gridwatch.etl.incidents import load_incidents
from gridwatch.etl.manifest import Manifest
from gridwatch.etl.positions import load_positions
from gridwatch.etl.reference import REFERENCE_TARGETS, load_reference
from gridwatch.etl.runlog import FileOutcome, RunCounts, job_run
from gridwatch.etl.units import load_units
from gridwatch.settings import Settings

__all__ = ["JOBS", "Job", "JobResult", "run_manifest", "format_summary", "format_files", "database_lost",
           "disk_full"]

# Advisory lock key held by a run: one `etl run` at a time per database.
RUN_LOCK = 0x67726964


@dataclass
class JobResult:
    """How one job of a run ended: ``ok``, ``refused`` (some of its files, or the job itself) or
    ``skipped`` (it needs something refused), with each file's outcome."""

    job: str
    rows_in: int
    rows_loaded: int
    rows_rejected: int
    seconds: float
    status: str = "ok"
    files: list[FileOutcome] = field(default_factory=list)


@dataclass(frozen=True)
class RunContext:
    """What every job of one run gets."""

    engine: sa.Engine
    manifest: Manifest
    settings: Settings
    as_of: datetime | None
    reference_time: datetime | None
    progress: bool
    force: bool


def _reference(ctx: RunContext, counts: RunCounts) -> set[str]:
    return load_reference(ctx.engine, ctx.manifest, settings=ctx.settings, counts=counts, progress=ctx.progress,
                          force=ctx.force)


def _units(ctx: RunContext, counts: RunCounts) -> set[str]:
    load_units(ctx.engine, ctx.manifest.for_target("unit"), settings=ctx.settings, counts=counts, force=ctx.force)
    return {"unit"} if counts.refused else set()


def _fuse(ctx: RunContext, counts: RunCounts) -> set[str]:
    if ctx.manifest.for_target("grid_source"):
        fuse_grid_sources(ctx.engine, settings=ctx.settings, counts=counts, progress=ctx.progress)
    return set()


def _positions(ctx: RunContext, counts: RunCounts) -> set[str]:
    load_positions(
        ctx.engine, ctx.manifest.for_target("position"), settings=ctx.settings, counts=counts,
        default_timezone=ctx.manifest.timezone, reference_time=ctx.reference_time, force=ctx.force,
    )
    return {"position"} if counts.refused else set()


def _incidents(ctx: RunContext, counts: RunCounts) -> set[str]:
    load_incidents(
        ctx.engine, ctx.manifest.for_target("incident"), settings=ctx.settings, counts=counts,
        default_timezone=ctx.manifest.timezone, reference_time=ctx.reference_time, force=ctx.force,
    )
    return {"incident"} if counts.refused else set()


def _coverage(ctx: RunContext, counts: RunCounts) -> set[str]:
    derive_coverage(ctx.engine, settings=ctx.settings, as_of=ctx.as_of)
    return set()


def _defence(ctx: RunContext, counts: RunCounts) -> set[str]:
    derive_defence(ctx.engine, settings=ctx.settings)
    return set()


@dataclass(frozen=True)
class Job:
    """One job: what it makes and what it needs (target layers and the products of earlier jobs).
    ``run`` returns what it was given but could not make (refused files); the files of the
    manifest it reads are those of the targets it makes."""

    name: str
    run: Callable[[RunContext, RunCounts], set[str]]
    makes: tuple[str, ...]
    needs: tuple[str, ...] = ()


_BORDER = ("zone", "defence_line")  # zones and the border segments cut from defence line 1
JOBS: tuple[Job, ...] = (
    Job("reference", _reference, REFERENCE_TARGETS),
    Job("units", _units, ("unit",), ("command_unit", "police_area")),
    Job("fuse-grids", _fuse, ("grid",), ("grid_source", "command_unit")),
    Job("positions", _positions, ("position",), ("unit", "grid", *_BORDER)),
    Job("incidents", _incidents, ("incident",), ("grid", *_BORDER)),
    Job("coverage", _coverage, ("coverage",), ("position", "unit", "grid", "sensor", *_BORDER)),
    Job("defence", _defence, ("defence",), ("defence_line", "checkpoint", "road", "zone")),
)


def database_lost(exc: BaseException) -> bool:
    """Whether ``exc`` means the connection to the database was lost or refused (the server went
    away), not that a statement failed."""
    orig = getattr(exc, "orig", None) or exc
    if not isinstance(orig, (psycopg.OperationalError, psycopg.InterfaceError)):
        return False
    state = getattr(orig, "sqlstate", None)
    return state is None or state.startswith(("08", "57P"))


def disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` is the database server running out of disk."""
    return isinstance(getattr(exc, "orig", None) or exc, psycopg.errors.DiskFull)


def run_manifest(
    engine: sa.Engine,
    manifest: Manifest,
    *,
    settings: Settings,
    as_of: datetime | None = None,
    progress: bool = False,
    force: bool = False,
    on_job: Callable[[JobResult], None] | None = None,
) -> list[JobResult]:
    """Run every job on ``manifest``'s inputs; return what each did.

    ``as_of`` is the moment coverage is judged at (default: the manifest's
    ``exported_at`` for an export, else now); fixes later than the export
    time (or now) plus the tolerance are rejected as being in the future.
    ``force`` loads every file again, changed or not.
    """
    reference_time = manifest.exported_at
    ctx = RunContext(
        engine, manifest, settings,
        as_of or manifest.exported_at or datetime.now(timezone.utc),
        reference_time, progress, force,
    )
    results: list[JobResult] = []
    missing: set[str] = set()  # what a refused file or a skipped job did not give
    current = "start"
    try:
        with _exclusive_run(engine):
            for job in JOBS:
                current = job.name
                result = _run_job(ctx, job, missing)
                results.append(result)
                if on_job:
                    on_job(result)
    except Exception as exc:
        if disk_full(exc):
            raise DatabaseError(
                f"the database's disk is full (during {current}: {_first_line(exc)}): free space on it and run "
                f"`etl run` again; the jobs and files finished before are kept ({_done(results)})"
            ) from None
        if database_lost(exc):
            raise DatabaseError(
                f"the database went away during {current} ({_first_line(exc)}): the jobs and files finished "
                f"before are kept ({_done(results)}); start it (gridwatch db start) and run `etl run` again"
            ) from None
        raise
    return results


def _run_job(ctx: RunContext, job: Job, missing: set[str]) -> JobResult:
    started = time.perf_counter()
    waits = sorted(set(job.needs) & missing)
    with job_run(ctx.engine, job.name, str(ctx.manifest.root)) as counts:
        if waits:
            status, message = "skipped", f"needs {', '.join(waits)}, which was refused or skipped"
            inputs = ctx.manifest.for_target(*job.makes)
            for entry in inputs:
                counts.add(FileOutcome(entry.source, entry.target, "skipped", message))
            if not inputs:
                counts.add(FileOutcome(job.name, job.name, "skipped", message))
            missing.update(job.makes)
        else:
            try:
                lacking = job.run(ctx, counts)
                status = "refused" if lacking else "ok"
            except InputError as exc:
                lacking = set(job.makes)
                status = "refused"
                counts.add(FileOutcome(job.name, job.name, "refused", " ".join(str(exc).split())))
            missing.update(lacking)
    return JobResult(job.name, counts.rows_in, counts.rows_loaded, counts.rows_rejected,
                     time.perf_counter() - started, status, counts.files)


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _done(results: list[JobResult]) -> str:
    return "finished: " + ", ".join(r.job for r in results) if results else "no job had finished"


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
    rows = [("job", "rows in", "loaded", "rejected", "seconds", "")]
    rows += [(r.job, f"{r.rows_in:,}", f"{r.rows_loaded:,}", f"{r.rows_rejected:,}", f"{r.seconds:.1f}",
              "" if r.status == "ok" else r.status) for r in results]
    total = sum(r.seconds for r in results)
    rows.append(("total", "", "", "", f"{total:.1f}", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    return "\n".join(
        "  ".join(c.ljust(w) if i in (0, 5) else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
        for r in rows
    )


def format_files(results: list[JobResult]) -> str:
    """One line per input file of the run: loaded, unchanged, refused (why) or skipped (what it waits for)."""
    return "\n".join(f"  {f.describe()}" for r in results for f in r.files)
