"""The run log (``etl_run``) and the quarantine: where every input row is accounted for.

Each job runs inside :func:`job_run`, which records a row in ``etl_run`` in
its own transaction (so a failed job still leaves a ``failed`` row), and hands
the job a :class:`RunCounts` to fill. Rejected rows go to ``quarantine`` with
the original record and a reason, in the job's transaction, so a killed job
leaves neither loaded nor quarantined rows behind.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import psycopg
import sqlalchemy as sa

from gridwatch.etl._copy import copy_rows
from gridwatch.etl.schema import etl_run

__all__ = ["RunCounts", "job_run", "quarantine_rows", "file_digest", "already_loaded", "mark_loaded"]


@dataclass
class RunCounts:
    """What a job saw: rows in, loaded, rejected (into quarantine)."""

    run_id: int
    rows_in: int = 0
    rows_loaded: int = 0
    rows_rejected: int = 0


@contextmanager
def job_run(engine: sa.Engine, job: str, source: str | None = None) -> Iterator[RunCounts]:
    """Record a job in ``etl_run``: ``running``, then ``ok`` with counts or ``failed``."""
    with engine.begin() as conn:
        run_id = conn.execute(sa.insert(etl_run).values(job=job, source=source).returning(etl_run.c.id)).scalar_one()
    counts = RunCounts(run_id)
    this_run = sa.update(etl_run).where(etl_run.c.id == run_id).values(finished=sa.func.now())
    try:
        yield counts
    except BaseException as exc:
        with engine.begin() as conn:
            conn.execute(this_run.values(status="failed", message=f"{type(exc).__name__}: {exc}"[:2000]))
        raise
    with engine.begin() as conn:
        conn.execute(this_run.values(status="ok", rows_in=counts.rows_in, rows_loaded=counts.rows_loaded,
                                     rows_rejected=counts.rows_rejected))


def quarantine_rows(
    conn: psycopg.Connection, run_id: int | None, source: str, records: pd.DataFrame, reasons: pd.Series | str
) -> int:
    """Put rejected input rows into ``quarantine`` with their reason (one COPY).

    ``records`` holds the original fields (geometry as WKT if any); ``reasons``
    is one reason per row or one for all.
    """
    if records.empty:
        return 0
    as_json = records.astype(object).where(records.notna(), None).to_dict(orient="records")
    frame = pd.DataFrame(
        {
            "run_id": run_id,
            "source": source,
            "record": [json.dumps(r, ensure_ascii=False, default=str) for r in as_json],
            "reason": reasons if isinstance(reasons, str) else reasons.to_numpy(),
        }
    )
    return copy_rows(conn, "quarantine", frame)


def file_digest(path: Path) -> str:
    """The SHA-256 of a file's bytes: its identity in ``loaded_file``."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def already_loaded(conn: psycopg.Connection, sha256: str, target: str) -> bool:
    """True when a file with these bytes was loaded into ``target`` before."""
    found = conn.execute("SELECT 1 FROM loaded_file WHERE sha256 = %s AND target = %s", (sha256, target))
    return found.fetchone() is not None


def mark_loaded(conn: psycopg.Connection, sha256: str, path: Path, target: str, counts: RunCounts) -> None:
    """Record a loaded file, in the transaction that loaded it."""
    conn.execute(
        "INSERT INTO loaded_file (sha256, path, target, run_id, rows_in, rows_loaded, rows_rejected) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (sha256, str(path), target, counts.run_id, counts.rows_in, counts.rows_loaded, counts.rows_rejected),
    )
