"""The run log (``etl_run``), the quarantine and the ledger of loaded files: where every input row
and every file is accounted for.

Each job runs inside :func:`job_run`, which records a row in ``etl_run`` in
its own transaction (so a failed job still leaves a ``failed`` row), and hands
the job a :class:`RunCounts` to fill, with the outcome of each file it was
given. Rejected rows go to ``quarantine`` with the original record, a reason
and the line they stood on, in the job's transaction, so a killed job leaves
neither loaded nor quarantined rows behind.

The ledger (``loaded_file``) knows a file by its *load key*: the bytes of every
part of the dataset (a Shapefile's .shp, .dbf, .shx, .prj, .cpg, ...) and the
options that change what a load produces (CRS, encoding, column mapping,
source layer, department, time zone, callsign). The same key again is
"unchanged"; a new key for a file loaded before is a reload, which replaces
what the earlier load produced, its quarantine rows included.
"""
from __future__ import annotations

import gc
import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
import psycopg
import sqlalchemy as sa

from gridwatch.etl._copy import copy_rows
from gridwatch.etl.manifest import FileEntry
from gridwatch.etl.schema import etl_run

__all__ = [
    "RunCounts", "FileOutcome", "job_run", "quarantine_rows", "load_key", "already_loaded", "loaded_before",
    "forget_earlier_load", "mark_loaded", "freeze_start_up", "collector_paused",
]

Status = Literal["loaded", "unchanged", "refused", "skipped"]


@dataclass
class FileOutcome:
    """How one input file of a job ended: loaded, unchanged, refused (with the reason) or skipped
    (with what it waits for)."""

    source: str
    target: str
    status: Status
    message: str = ""
    rows_in: int = 0
    rows_loaded: int = 0
    rows_rejected: int = 0

    def describe(self) -> str:
        """One line for a person."""
        if self.status == "loaded":
            return (f"{self.source}: {self.rows_in:,} rows, {self.rows_loaded:,} loaded, "
                    f"{self.rows_rejected:,} quarantined")
        if self.status == "unchanged":
            return f"{self.source}: already loaded, nothing changed"
        return f"{self.source}: {self.status}: {self.message}"


@dataclass
class RunCounts:
    """What a job saw: rows in, loaded, rejected (into quarantine), and each file's outcome."""

    run_id: int
    rows_in: int = 0
    rows_loaded: int = 0
    rows_rejected: int = 0
    files: list[FileOutcome] = field(default_factory=list)

    def add(self, outcome: FileOutcome) -> None:
        """Count one file's outcome into the job's totals."""
        self.files.append(outcome)
        self.rows_in += outcome.rows_in
        self.rows_loaded += outcome.rows_loaded
        self.rows_rejected += outcome.rows_rejected

    @property
    def refused(self) -> list[FileOutcome]:
        """The files that were refused."""
        return [f for f in self.files if f.status == "refused"]

    @property
    def not_done(self) -> list[FileOutcome]:
        """The files (or jobs) refused or skipped."""
        return [f for f in self.files if f.status in ("refused", "skipped")]


def freeze_start_up() -> None:
    """Leave the objects that exist now (modules, settings, the engine) out of the cyclic
    collector's passes until ``gc.unfreeze()``: a job makes millions of objects, and each full
    pass walked all of those again (0.8 s of a 6 s position load, 0.5 s of 5 s of grid fusion)."""
    gc.collect()
    gc.freeze()


@contextmanager
def collector_paused() -> Iterator[None]:
    """The cyclic collector off for a block that makes millions of objects holding no cycles
    (geometries, arrays): each batch of them survived into the oldest generation and set off full
    passes (54 in a province coverage rebuild, 2.2 s; 18 and 0.5 s with the fixes' search paused)."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


@contextmanager
def job_run(engine: sa.Engine, job: str, source: str | None = None) -> Iterator[RunCounts]:
    """Record a job in ``etl_run``: ``running``, then ``ok`` with counts, or ``failed`` (an error,
    or a file refused or skipped: the message names each)."""
    with engine.begin() as conn:
        run_id = conn.execute(sa.insert(etl_run).values(job=job, source=source).returning(etl_run.c.id)).scalar_one()
    counts = RunCounts(run_id)
    this_run = sa.update(etl_run).where(etl_run.c.id == run_id).values(finished=sa.func.now())
    freeze_start_up()
    try:
        yield counts
    except BaseException as exc:
        with engine.begin() as conn:
            conn.execute(this_run.values(status="failed", message=f"{type(exc).__name__}: {exc}"[:2000]))
        raise
    finally:
        gc.unfreeze()
    refused = "; ".join(f.describe() for f in counts.not_done)
    with engine.begin() as conn:
        conn.execute(this_run.values(status="failed" if refused else "ok", message=refused[:2000] or None,
                                     rows_in=counts.rows_in, rows_loaded=counts.rows_loaded,
                                     rows_rejected=counts.rows_rejected))


def quarantine_rows(
    conn: psycopg.Connection, run_id: int | None, source: str, records: pd.DataFrame, reasons: pd.Series | str,
    *, lines: np.ndarray | None = None,
) -> int:
    """Put rejected input rows into ``quarantine`` with their reason (one COPY).

    ``records`` holds the original fields (geometry as WKT if any); ``reasons``
    is one reason per row or one for all; ``lines`` where each row stood in
    its file (CSV line, 1 = the header; feature number, 1 = the first).
    """
    if records.empty:
        return 0
    as_json = records.astype(object).where(records.notna(), None).to_dict(orient="records")
    frame = pd.DataFrame(
        {
            "run_id": run_id,
            "source": source,
            "line": pd.array(lines if lines is not None else [None] * len(records), dtype="Int64"),
            "record": [json.dumps(r, ensure_ascii=False, default=str) for r in as_json],
            "reason": reasons if isinstance(reasons, str) else np.asarray(reasons),
        }
    )
    return copy_rows(conn, "quarantine", frame)


def load_key(entry: FileEntry) -> str:
    """The SHA-256 of every part of the dataset and of the options that change what loading it gives."""
    digest = hashlib.sha256()
    for part in entry.parts():
        digest.update(part.name.lower().encode())
        with open(part, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    digest.update(json.dumps(entry.options(), sort_keys=True).encode())
    return digest.hexdigest()


def already_loaded(conn: psycopg.Connection, key: str, target: str) -> bool:
    """True when a dataset with this load key was loaded into ``target`` before."""
    found = conn.execute("SELECT 1 FROM loaded_file WHERE sha256 = %s AND target = %s", (key, target))
    return found.fetchone() is not None


def loaded_before(conn: psycopg.Connection, source: str, target: str) -> bool:
    """True when some version of ``source`` was loaded into ``target`` before (a reload)."""
    found = conn.execute("SELECT 1 FROM loaded_file WHERE path = %s AND target = %s", (source, target))
    return found.fetchone() is not None


def forget_earlier_load(conn: psycopg.Connection, source: str, target: str, key: str) -> None:
    """Drop the ledger rows and the quarantine rows of an earlier load of ``source`` (or of this key),
    in the transaction that loads it again."""
    conn.execute("DELETE FROM loaded_file WHERE target = %s AND (path = %s OR sha256 = %s)", (target, source, key))
    conn.execute("DELETE FROM quarantine WHERE source = %s", (source,))


def mark_loaded(conn: psycopg.Connection, key: str, outcome: FileOutcome, run_id: int | None) -> None:
    """Record a loaded dataset, in the transaction that loaded it."""
    conn.execute(
        "INSERT INTO loaded_file (sha256, path, target, run_id, rows_in, rows_loaded, rows_rejected) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (key, outcome.source, outcome.target, run_id, outcome.rows_in, outcome.rows_loaded, outcome.rows_rejected),
    )
