"""``gridwatch bench etl``: the whole run, grid fusion, coverage and the position load (filtered,
fused and durable) against a typed COPY of the same rows, a bare CSV COPY and the naive way.

Runs in a throwaway database on the embedded server (or the server of
``GRIDWATCH_DATABASE_URL``), on a generated sample kept under
``<home>/bench/sample-<scale>-<generator hash>``. The run's results are condensed by
:func:`gridwatch.bench._reference_run.run_digest` into ``<home>/bench/etl-<scale>.json``
and compared with the committed reference of that scale, if there is one.
"""
from __future__ import annotations

import json
import resource
import time
from pathlib import Path

import sqlalchemy as sa

from gridwatch.bench import Figure
from gridwatch.bench._harness import bench_engine, bench_sample, load_sample
from gridwatch.bench._reference_run import reference_file, run_digest, same_as_reference
from gridwatch.etl.database import pg_transaction
from gridwatch.etl.manifest import read_manifest
from gridwatch.settings import Settings

__all__ = ["bench_etl", "NAIVE_ROWS"]

NAIVE_ROWS = 5_000
# What each scale must reach (the ETL issue's figures).
TARGETS = {
    "small": {"run": "", "fusion": "", "coverage": "", "positions_s": ""},
    "prefecture": {"run": "<= 120", "fusion": "<= 30", "coverage": "", "positions_s": ""},
    "province": {"run": "<= 900", "fusion": "<= 180", "coverage": "<= 60", "positions_s": "<= 600"},
}
# The position load against its baselines (the performance issue's goals), at every scale.
VS_TYPED_COPY = ">= 1.0x"
VS_NAIVE = ">= 100x"

_NAIVE_INSERT = """
INSERT INTO naive_position (unit_id, ts, geom, accuracy, source, grid_id, zone_id)
SELECT u.id, %(ts)s::timestamptz, pt, %(acc)s, 'naive',
       (SELECT id FROM grid WHERE ST_Contains(grid.geom, pt) LIMIT 1),
       (SELECT id FROM zone WHERE ST_Contains(zone.geom, pt) LIMIT 1)
FROM unit u, ST_SetSRID(ST_MakePoint(%(lon)s, %(lat)s), 4326) AS pt
WHERE u.callsign = %(callsign)s
"""


def bench_etl(settings: Settings, *, scale: str) -> list[Figure]:
    """Time the whole ``etl run`` on the ``scale`` sample, job by job; return the figures."""
    manifest = read_manifest(bench_sample(settings, scale))
    with bench_engine(settings) as engine:
        started = time.perf_counter()
        results = {r.job: r for r in load_sample(engine, manifest, settings=settings)}
        total = time.perf_counter() - started
        peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        _check_reference(engine, settings, scale)
        positions = results["positions"]
        fused_rate = positions.rows_in / positions.seconds
        typed_rate = _typed_copy_rate(engine)
        copy_rate = _bare_copy_rate(engine, [e.path for e in manifest.for_target("position") if e.format == "csv"])
        naive_rate = _naive_rate(engine)
    targets = TARGETS[scale]
    rate = "positions loaded + filtered + fused + stored"
    return [
        Figure(f"whole etl run ({scale})", total, "s", targets["run"]),
        Figure("peak RSS of the etl run", peak_rss_mb, "MB"),
        Figure("grid fusion", results["fuse-grids"].seconds, "s", targets["fusion"]),
        Figure("coverage rebuild", results["coverage"].seconds, "s", targets["coverage"]),
        Figure(f"{rate} ({positions.rows_in:,} rows)", positions.seconds, "s", targets["positions_s"]),
        Figure(rate, fused_rate, "rows/s", VS_TYPED_COPY, typed_rate, "binary COPY, position's shape and indexes"),
        Figure(rate, fused_rate, "rows/s", "", copy_rate, "bare CSV COPY, unindexed text table"),
        Figure(rate, fused_rate, "rows/s", VS_NAIVE, naive_rate,
               f"naive per-row lookup + INSERT, {NAIVE_ROWS:,} rows"),
    ]


def _check_reference(engine: sa.Engine, settings: Settings, scale: str) -> None:
    """Write the run's digest beside the sample and say whether it equals the committed reference."""
    digest = run_digest(engine)
    written = settings.home_dir / "bench" / f"etl-{scale}.json"
    written.write_text(json.dumps(digest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    same = same_as_reference(digest, reference_file(scale))
    if same is None:
        print(f"fused ids / quarantine / coverage: no reference for scale {scale} (this run's is {written})")
        return
    verdict = "yes" if all(same.values()) else "no (differs: " + ", ".join(p for p, ok in same.items() if not ok) + ")"
    print(f"fused ids / quarantine / coverage identical to reference: {verdict}")


def _typed_copy_rate(engine: sa.Engine) -> float:
    """Rows/s of a binary COPY of the loaded fixes into a durable table of ``position``'s columns,
    checks, key and indexes (the rate a fused load should reach)."""
    with pg_transaction(engine) as conn:
        data = bytearray()
        with conn.cursor().copy("COPY (SELECT * FROM position) TO STDOUT (FORMAT BINARY)") as copy:
            for block in copy:
                data += block
        rows = conn.execute("SELECT count(*) FROM position").fetchone()[0]
        conn.execute("CREATE TABLE typed_copy (LIKE position INCLUDING ALL)")
    started = time.perf_counter()
    with pg_transaction(engine) as conn:
        with conn.cursor().copy("COPY typed_copy FROM STDIN (FORMAT BINARY)") as copy:
            view = memoryview(data)
            for start in range(0, len(view), 1 << 20):
                copy.write(view[start : start + (1 << 20)])
    elapsed = time.perf_counter() - started
    with pg_transaction(engine) as conn:
        conn.execute("DROP TABLE typed_copy")
    return rows / elapsed


def _bare_copy_rate(engine: sa.Engine, paths: list[Path]) -> float:
    """Rows/s of streaming the CSV files as they are into an unindexed text table."""
    rows = 0
    started = time.perf_counter()
    with pg_transaction(engine) as conn:
        for path in paths:
            header = path.open(encoding="utf-8").readline().strip().split(",")
            conn.execute(f"CREATE TABLE IF NOT EXISTS bare_copy ({', '.join(f'c{i} text' for i in range(len(header)))})")
            with conn.cursor().copy("COPY bare_copy FROM STDIN (FORMAT csv, HEADER true)") as copy, path.open("rb") as handle:
                while block := handle.read(1 << 20):
                    copy.write(block)
        rows = conn.execute("SELECT count(*) FROM bare_copy").fetchone()[0]
    return rows / (time.perf_counter() - started)


def _naive_rate(engine: sa.Engine) -> float:
    """Rows/s of one INSERT per fix with its unit, grid and zone looked up per row (the baseline to beat).

    The fixes are the first :data:`NAIVE_ROWS` accepted ones, so no row fails.
    """
    with pg_transaction(engine) as conn:
        sample = conn.execute(
            "SELECT u.callsign, p.ts, ST_X(p.geom), ST_Y(p.geom), p.accuracy FROM position p "
            "JOIN unit u ON u.id = p.unit_id ORDER BY p.ts LIMIT %s", (NAIVE_ROWS,)
        ).fetchall()
        conn.execute("CREATE TEMP TABLE naive_position (LIKE position INCLUDING DEFAULTS) ON COMMIT DROP")
        conn.execute("ALTER TABLE naive_position ADD PRIMARY KEY (unit_id, ts)")
        conn.execute("CREATE INDEX ON naive_position USING gist (geom)")
        started = time.perf_counter()
        for callsign, ts, lon, lat, accuracy in sample:  # row by row on purpose: the naive baseline
            conn.execute(_NAIVE_INSERT, {"callsign": callsign, "ts": ts, "lon": lon, "lat": lat, "acc": accuracy})
        return len(sample) / (time.perf_counter() - started)
