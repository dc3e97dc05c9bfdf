"""`etl run` on the small sample leaves exactly the frozen reference: the same fused ids, border
distances and H3 cells per fix, the same quarantine reasons at the same lines, the same coverage.

The reference (tests/reference/small.json) was written by the position load before it was made
faster; a change that alters any fused value, rejection or coverage status fails here. It is
written again only when the sample generator changes, by a load that first reproduced the old
reference on the old sample. Its hashes were last re-computed, in their order-free form, from a
database whose rows first reproduced the sorted-rows hashes before them."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa

from gridwatch.bench._reference_run import run_digest, same_as_reference

REFERENCE = Path(__file__).with_name("reference") / "small.json"


def test_etl_run_on_the_small_sample_matches_the_reference(
    clean_db: sa.Engine, small_sample: Path, cli_env: dict[str, str]
) -> None:
    run = subprocess.run([sys.executable, "-m", "gridwatch.cli", "etl", "run", "--input", str(small_sample)],
                         capture_output=True, text=True, env=cli_env, timeout=600)
    assert run.returncode == 0, run.stderr
    digest = run_digest(clean_db)
    reference = json.loads(REFERENCE.read_text(encoding="utf-8"))
    assert reference["fixes"]["counts"]["all"] > 0 and reference["quarantine"]["counts"]
    assert {part: value["counts"] for part, value in digest.items()} == \
        {part: value["counts"] for part, value in reference.items()}
    assert same_as_reference(digest, REFERENCE) == dict.fromkeys(reference, True)

    # one fix's border distance moved by a metre changes the fixes' hash, and only that
    with clean_db.begin() as conn:
        conn.execute(sa.text("UPDATE position SET border_m = border_m + 1 "
                             "WHERE (unit_id, ts) = (SELECT unit_id, ts FROM position WHERE border_m IS NOT NULL "
                             "ORDER BY unit_id, ts LIMIT 1)"))
    changed = same_as_reference(run_digest(clean_db), REFERENCE)
    assert changed == {**dict.fromkeys(reference, True), "fixes": False}
