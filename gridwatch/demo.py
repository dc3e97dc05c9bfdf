"""``gridwatch demo``: the database, the sample region, every ETL job on it, and a live
feed (the ingest service with the simulator replaying the sample's patrols)."""
from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import click

from gridwatch.etl.database import ensure_database
from gridwatch.etl.manifest import read_manifest
from gridwatch.etl.plan import build_faces
from gridwatch.etl.runner import format_summary, run_manifest
from gridwatch.settings import ROLES, Settings

__all__ = ["prepare_demo", "sample_folder", "live_feed", "demo_accounts"]

GRIDWATCH = [sys.executable, "-m", "gridwatch.cli"]


def sample_folder(settings: Settings, *, seed: int, scale: str, progress: bool = True) -> Path:
    """Today's generated sample under the home folder, ending at the hour it was made
    (written once a day, atomically), so the demo shows current data."""
    from gridwatch.data import generate_sample

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
    build_faces(engine, settings=settings, progress=True)  # the grid planner's building blocks
    return folder


def demo_accounts(settings: Settings, *, base_url: str) -> Path:
    """One account per role (``demo-<role>``, of the top command unit) with a new password on each
    run, and a kiosk link for a wall; printed, and kept in ``<home>/demo-accounts.txt`` (mode 600)."""
    import secrets

    from gridwatch.etl.accounts import accounts, add_account, add_kiosk, kiosks, revoke_kiosk, set_password
    from gridwatch.etl.database import database_engine
    from gridwatch.tls import write_secret

    lines = []
    with database_engine(settings).begin() as conn:
        existing = {account.name for account in accounts(conn)}
        for role in ROLES:
            name, password = f"demo-{role}", secrets.token_urlsafe(12)
            if name in existing:
                set_password(conn, name, password, actor="demo")
            else:
                add_account(conn, name, role, password, actor="demo")
            lines.append(f"{role:<10} {name:<16} {password}")
        if any(k.name == "demo-wall" and k.revoked_at is None for k in kiosks(conn)):
            revoke_kiosk(conn, "demo-wall", actor="demo")
        lines.append(f"kiosk      {base_url}/kiosk/{add_kiosk(conn, 'demo-wall', actor='demo')}")
    path = write_secret(settings.home_dir / "demo-accounts.txt", ("\n".join(lines) + "\n").encode())
    click.echo("sign in with (role, name, password; new on every run):\n  " + "\n  ".join(lines))
    return path


def _port(preferred: int) -> int:
    """``preferred`` when it is free on 127.0.0.1, else any free port."""
    for candidate in (preferred, 0):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise OSError("no free port on 127.0.0.1")


def _wait_listening(port: int, process: subprocess.Popen, log: Path, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise click.ClickException(f"the ingest service stopped at start-up; see {log}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise click.ClickException(f"the ingest service did not listen on port {port}; see {log}")


@contextmanager
def live_feed(settings: Settings, folder: Path) -> Iterator[str]:
    """Run the ingest service and the simulator (replaying ``folder`` from now on) as
    child processes while the block runs; yields the ingest URL. Logs go to ``<home>/logs``."""
    logs = settings.home_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    http_port, cot_port, cot_tls_port = _port(5055), _port(8087), _port(8089)
    url = f"http://127.0.0.1:{http_port}"
    children: list[subprocess.Popen] = []
    try:
        with open(logs / "ingest.log", "ab") as ingest_log:
            ingest = subprocess.Popen(
                [*GRIDWATCH, "ingest", "--http-port", str(http_port), "--cot-port", str(cot_port),
                 "--cot-tls-port", str(cot_tls_port)],
                stdout=ingest_log, stderr=subprocess.STDOUT,
            )
        children.append(ingest)
        _wait_listening(http_port, ingest, logs / "ingest.log")
        with open(logs / "simulate.log", "ab") as simulate_log:
            children.append(subprocess.Popen(
                [*GRIDWATCH, "simulate", "--input", str(folder), "--provision", "--tokens",
                 str(settings.home_dir / "demo-tokens.json"), "--url", url, "--speed", "1x"],
                stdout=simulate_log, stderr=subprocess.STDOUT,
            ))
        click.echo(f"live feed: ingest on {url} (OsmAnd, JSON), tcp://127.0.0.1:{cot_port} (CoT) and "
                   f"tls://127.0.0.1:{cot_tls_port} (CoT with device certificates); "
                   f"the simulator replays the sample's patrols; logs in {logs}")
        yield url
    finally:
        for child in reversed(children):
            child.terminate()
        for child in reversed(children):
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
