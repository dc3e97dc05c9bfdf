"""The README's first command: `gridwatch demo` serves a live map of the loaded region."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import sqlalchemy as sa

from gridwatch.bench._harness import new_account

from _browser import LOADED, RENDERED, offline_page
from _ingest import free_port

pytestmark = pytest.mark.browser

LAYERS = ("grids", "zones", "roads", "lines", "checkpoints", "segments", "cu_county", "cu_township")


def wait_http(url: str, process: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, "the demo stopped before serving"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    pytest.fail(f"the demo did not serve {url} within {timeout_s} s")


def test_demo_serves_a_live_map_of_the_loaded_layers(
    clean_db: sa.Engine, cli_env: dict[str, str], tmp_path: Path, artifacts: Path
) -> None:
    port = free_port()
    env = {**cli_env, "GRIDWATCH_PORT": str(port)}
    log = open(tmp_path / "demo.log", "wb")
    demo = subprocess.Popen([sys.executable, "-m", "gridwatch.cli", "demo", "--scale", "small", "--seed", "3"],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/wall", demo, timeout_s=240)
        with offline_page(base, account=new_account(clean_db)) as (page, watch):
            page.goto(f"{base}/wall")
            page.wait_for_function(LOADED, timeout=60_000)
            page.wait_for_timeout(1500)
            rendered = page.evaluate(RENDERED, list(LAYERS))
            page.screenshot(path=str(artifacts / "demo-wall.png"))
        assert all(rendered[layer] > 0 for layer in LAYERS), rendered
        assert not watch.offsite and not watch.console_errors, (watch.offsite, watch.console_errors)

        # The simulator feeds the ingest service: live fixes arrive in the database.
        deadline = time.monotonic() + 60
        live = 0
        while time.monotonic() < deadline and not live:
            with clean_db.connect() as conn:
                live = conn.execute(sa.text("SELECT count(*) FROM position WHERE source IN ('osmand', 'cot', 'json')")).scalar()
            time.sleep(2)
        assert live > 0, (tmp_path / "demo.log").read_text()[-2000:]
    finally:
        demo.send_signal(signal.SIGTERM)
        demo.wait(timeout=60)
        log.close()
    # Its children (ingest service, simulator) stopped with it.
    leftovers = subprocess.run(["pgrep", "-f", f"gridwatch.cli (ingest|simulate).*{env['GRIDWATCH_HOME']}"],
                               capture_output=True, text=True).stdout
    assert demo.returncode is not None and not leftovers
