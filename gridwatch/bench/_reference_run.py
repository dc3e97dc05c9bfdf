"""A frozen reference of what ``etl run`` leaves behind, to check that a faster load changes nothing.

:func:`run_digest` condenses a run's results into a compact, comparable
record: for every fix (callsign, time) its grid, zone, border segment, H3
cell and ``border_m`` (rounded to 0.01 m); every quarantined row's file (its
name, not its folder), line and reason; the coverage status of every grid and
border segment; each unit's latest fix. Rows are named by stable codes (grid code, zone kind, name
and shape, segment kilometre), never by serial ids, and kept beside counts as one hash of the
rows as a multiset, so a reference file stays small: the sha256 of the row count and of the sums
of each row's md5 halves. The sums do not depend on the rows' order, so millions of fixes are
condensed without sorting them.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import sqlalchemy as sa

__all__ = ["REFERENCE_DIR", "run_digest", "reference_file", "same_as_reference"]

# The bench's references of the prefecture and province samples; the test suite keeps its small one under
# tests/reference.
REFERENCE_DIR = Path(__file__).with_name("reference")

# A zone's stable name: its kind, name and shape (worked out once per zone, not per fix).
_ZONE = "z.kind || ':' || coalesce(z.name, '') || ':' || md5(ST_AsBinary(z.geom))"
_FIX = (
    "u.callsign || '|' || (extract(epoch FROM p.ts) * 1000000)::bigint || '|' || coalesce(g.code, '-') || '|' "
    "|| coalesce(zn.name, '-') || '|' || coalesce(s.km_from::text, '-') || '|' || coalesce(p.h3::text, '-') "
    "|| '|' || coalesce(round(p.border_m::numeric, 2)::text, '-')"
)
_DIGESTS = {
    "fixes": f"""
        WITH zn AS MATERIALIZED (SELECT z.id, {_ZONE} AS name FROM zone z)
        SELECT {_FIX} FROM position p JOIN unit u ON u.id = p.unit_id LEFT JOIN grid g ON g.id = p.grid_id
        LEFT JOIN zn ON zn.id = p.zone_id LEFT JOIN border_segment s ON s.id = p.segment_id""",
    "quarantine": "SELECT regexp_replace(source, '^.*/', '') || '|' || coalesce(line::text, '-') || '|' || reason "
                  "FROM quarantine",
    "grid_coverage": "SELECT g.code || '|' || c.status FROM grid_coverage c JOIN grid g ON g.id = c.grid_id",
    "segment_coverage": "SELECT s.km_from || '|' || c.status FROM segment_coverage c "
                        "JOIN border_segment s ON s.id = c.segment_id",
    "unit_latest": "SELECT u.callsign || '|' || (extract(epoch FROM l.ts) * 1000000)::bigint FROM unit_latest l "
                   "JOIN unit u ON u.id = l.unit_id",
}
# What each digest is also counted by.
_COUNTS = {
    "fixes": "SELECT 'all', count(*) FROM position",
    "quarantine": "SELECT reason, count(*) FROM quarantine GROUP BY reason",
    "grid_coverage": "SELECT status, count(*) FROM grid_coverage GROUP BY status",
    "segment_coverage": "SELECT status, count(*) FROM segment_coverage GROUP BY status",
    "unit_latest": "SELECT 'all', count(*) FROM unit_latest",
}
# The rows as a multiset: their number and the sums of the two halves of each row's md5.
_MULTISET = """
SELECT count(*), coalesce(sum(('x' || left(h, 16))::bit(64)::bigint), 0),
       coalesce(sum(('x' || right(h, 16))::bit(64)::bigint), 0)
FROM (SELECT md5(r) AS h FROM ({rows}) AS x(r)) AS y
"""


def run_digest(engine: sa.Engine) -> dict[str, dict[str, object]]:
    """Per part (fixes, quarantine, coverage, latest fixes): the hash of its rows and its counts."""
    out: dict[str, dict[str, object]] = {}
    with engine.connect() as conn:
        for part, rows in _DIGESTS.items():
            multiset = conn.execute(sa.text(_MULTISET.format(rows=rows))).one()
            counts = {str(k): int(v) for k, v in conn.execute(sa.text(_COUNTS[part]))}
            out[part] = {"rows_hash": hashlib.sha256(":".join(map(str, multiset)).encode()).hexdigest(),
                         "counts": dict(sorted(counts.items()))}
    return out


def reference_file(scale: str) -> Path:
    """Where the bench keeps the reference of the ``scale`` sample."""
    return REFERENCE_DIR / f"{scale}.json"


def same_as_reference(digest: dict[str, dict[str, object]], path: Path) -> dict[str, bool] | None:
    """Per part, whether ``digest`` equals the reference at ``path``; None when there is no reference."""
    if not path.exists():
        return None
    reference = json.loads(path.read_text(encoding="utf-8"))
    return {part: digest.get(part) == value for part, value in reference.items()}
