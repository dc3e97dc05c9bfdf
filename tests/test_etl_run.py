"""`etl run` on the small sample: every row accounted for, reruns change nothing,
and a run killed at any moment then run again ends like an uninterrupted one."""
from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import sqlalchemy as sa

from _refdata import snapshot

GRIDWATCH = [sys.executable, "-m", "gridwatch.cli"]

def etl_run(folder: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*GRIDWATCH, "etl", "run", "--input", str(folder)], capture_output=True, text=True,
                          env=env, timeout=600)


def test_run_accounts_for_every_row_and_rerun_changes_nothing(
    clean_db: sa.Engine, small_sample: Path, cli_env: dict[str, str]
) -> None:
    first = etl_run(small_sample, cli_env)
    assert first.returncode == 0, first.stderr
    assert "total" in first.stdout and "positions" in first.stdout
    after_first = snapshot(clean_db)
    assert after_first["grid"] > 0 and after_first["position"] > 0 and after_first["incident"] > 0
    assert after_first["position"] == after_first["position_distinct"]
    assert after_first["quarantine"] > 0  # the sample carries noise
    with clean_db.connect() as conn:  # every quarantined file row says where it stood
        assert conn.execute(sa.text("SELECT count(*) FROM quarantine WHERE line IS NULL")).scalar() == 0
    with clean_db.connect() as conn:
        runs = conn.execute(sa.text(
            "SELECT job, status, rows_in, rows_loaded, rows_rejected FROM etl_run ORDER BY id"
        )).all()
    assert [r.job for r in runs] == ["reference", "units", "fuse-grids", "positions", "incidents", "coverage", "defence"]
    assert all(r.status == "ok" for r in runs)
    for r in runs:
        if r.job in ("reference", "units", "positions", "incidents"):
            assert r.rows_in == r.rows_loaded + r.rows_rejected, r

    second = etl_run(small_sample, cli_env)
    assert second.returncode == 0, second.stderr
    assert snapshot(clean_db) == after_first


def test_kill9_at_five_moments_then_rerun_ends_like_an_uninterrupted_run(
    clean_db: sa.Engine, small_sample: Path, cli_env: dict[str, str], emptier
) -> None:
    started = time.monotonic()
    assert etl_run(small_sample, cli_env).returncode == 0
    duration = time.monotonic() - started
    expected = snapshot(clean_db)

    emptier(clean_db)
    # Kill at moments spread over the run (start-up dominates the first second).
    for fraction in (0.25, 0.4, 0.55, 0.7, 0.85):
        process = subprocess.Popen([*GRIDWATCH, "etl", "run", "--input", str(small_sample)], env=cli_env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(duration * fraction)
        process.send_signal(signal.SIGKILL)
        process.wait()
    final = etl_run(small_sample, cli_env)
    assert final.returncode == 0, final.stderr
    assert snapshot(clean_db) == expected
    with clean_db.connect() as conn:
        interrupted = conn.execute(sa.text(
            "SELECT count(*) FROM etl_run WHERE status = 'failed' AND message LIKE 'interrupted%'"
        )).scalar()
    assert interrupted >= 1


def test_a_malformed_input_is_one_clear_line(tmp_path: Path, cli_env: dict[str, str]) -> None:
    (tmp_path / "manifest.json").write_text('{"format": "gridwatch-manifest/1", "files": [')
    result = etl_run(tmp_path, cli_env)
    assert result.returncode == 1
    assert result.stderr.startswith("gridwatch: error: ") and "manifest.json is not valid JSON" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_since_reads_only_feed_files_changed_since(
    clean_db: sa.Engine, small_sample: Path, cli_env: dict[str, str], tmp_path: Path
) -> None:
    import json
    import os
    import shutil

    folder = tmp_path / "drop"
    shutil.copytree(small_sample, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    old = time.time() - 3600
    for entry in manifest["files"]:
        os.utime(folder / entry["path"], (old, old))
    assert etl_run(folder, cli_env).returncode == 0
    before = snapshot(clean_db)

    # A new delivery: one fix more, in a file of its own, newer than T.
    with clean_db.connect() as conn:
        callsign, last = conn.execute(sa.text(
            "SELECT u.callsign, l.ts FROM unit_latest l JOIN unit u ON u.id = l.unit_id ORDER BY l.ts DESC LIMIT 1"
        )).one()
        lon, lat = conn.execute(sa.text(
            "SELECT ST_X(l.geom), ST_Y(l.geom) FROM unit_latest l JOIN unit u ON u.id = l.unit_id "
            "WHERE u.callsign = :c"), {"c": callsign}).one()
    (folder / "late.csv").write_text(
        f"unit_id,ts,lon,lat,speed,heading,accuracy\n{callsign},{(last + timedelta(seconds=20)).isoformat()},"
        f"{lon},{lat},0,0,5\n")
    manifest["files"].append({"path": "late.csv", "target": "position",
                              "columns": {"callsign": "unit_id", "speed_kmh": "speed", "accuracy_m": "accuracy"}})
    (folder / "manifest.json").write_text(json.dumps(manifest))
    since = datetime.fromtimestamp(old + 60, timezone.utc).isoformat()
    result = subprocess.run([*GRIDWATCH, "etl", "run", "--input", str(folder), "--since", since],
                            capture_output=True, text=True, env=cli_env, timeout=300)
    assert result.returncode == 0, result.stderr
    with clean_db.connect() as conn:
        positions = conn.execute(sa.text(
            "SELECT rows_in, rows_loaded FROM etl_run WHERE job = 'positions' ORDER BY id DESC LIMIT 1")).one()
    assert tuple(positions) == (1, 1)  # only the late file was read
    assert snapshot(clean_db)["position"] == before["position"] + 1


def test_a_job_leaves_what_came_before_it_out_of_the_collector_and_frees_it_after(clean_db: sa.Engine) -> None:
    """While a job runs, the objects made before it are frozen (the cyclic collector's passes skip
    them); after it, failed or not, nothing stays frozen, so they are collected again."""
    import gc

    from gridwatch.etl.runlog import job_run

    def collected(o: object) -> bool:  # in the generations the collector walks (frozen ones are not)
        return any(x is o for x in gc.get_objects())

    before = [[]]
    for fails in (False, True):
        with contextlib.suppress(RuntimeError), job_run(clean_db, "freeze check"):
            during = [[]]
            assert not collected(before) and collected(during)
            if fails:
                raise RuntimeError("the job failed")
        assert gc.get_freeze_count() == 0 and collected(before)


def test_a_paused_collector_is_on_again_after_the_block_and_stays_off_if_it_was() -> None:
    import gc

    from gridwatch.etl.runlog import collector_paused

    with contextlib.suppress(RuntimeError), collector_paused():
        assert not gc.isenabled()
        raise RuntimeError("the block failed")
    assert gc.isenabled()
    gc.disable()
    try:
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_crash_in_compiled_code_leaves_every_threads_stack(
    clean_db: sa.Engine, small_sample: Path, cli_env: dict[str, str]
) -> None:
    """An abort (as glibc raises on a corrupted heap) mid-run prints the Python stack of each thread."""
    run = subprocess.Popen([*GRIDWATCH, "etl", "run", "--input", str(small_sample)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True, env=cli_env)
    time.sleep(2.0)
    run.send_signal(signal.SIGABRT)
    _, stderr = run.communicate(timeout=60)
    assert run.returncode == -signal.SIGABRT
    assert "Fatal Python error: Aborted" in stderr and "most recent call first" in stderr, stderr[-2000:]
