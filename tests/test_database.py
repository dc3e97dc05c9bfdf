"""The embedded PostGIS: lifecycle, crash recovery and clear errors."""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from gridwatch.etl.server import EmbeddedServer, _alive
from gridwatch.settings import Settings

GRIDWATCH = [sys.executable, "-m", "gridwatch.cli"]


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*GRIDWATCH, *args], capture_output=True, text=True, env=env, timeout=120)


@pytest.fixture
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Under /tmp so the unprivileged server user can reach it when tests run as root.
    path = tmp_path_factory.mktemp("home")
    path.chmod(0o755)
    for parent in path.parents:
        if parent.stat().st_mode & 0o001 == 0 and parent != Path("/"):
            parent.chmod(parent.stat().st_mode | 0o001)
    return path


@pytest.fixture
def env(home: Path) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if k != "GRIDWATCH_DATABASE_URL"}
    return {**environ, "GRIDWATCH_HOME": str(home)}


@pytest.fixture
def server(home: Path, env: dict[str, str]):
    yield EmbeddedServer(Settings(home=home))
    run_cli("db", "stop", env=env)


def test_start_twice_kill9_recover_and_stop(server: EmbeddedServer, env: dict[str, str]) -> None:
    # Two starts at once on a new home: one creates and starts the cluster, the other waits and finds it running.
    both = [subprocess.Popen([*GRIDWATCH, "db", "start"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=env) for _ in range(2)]
    said = sorted(p.communicate(timeout=120)[0].split()[0] for p in both)
    assert [p.returncode for p in both] == [0, 0] and said == ["already", "started:"], said

    url = run_cli("db", "url", env=env).stdout.strip()
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT postgis_lib_version()").fetchone()[0].startswith("3")
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname='public'")}
    assert {"grid", "position", "incident", "quarantine", "etl_run"} <= tables

    # A crash with a client connected: kill -9 the postmaster, then start again.
    idle = psycopg.connect(url)
    os.kill(server.pid(), signal.SIGKILL)
    time.sleep(0.3)
    assert not server.is_running()
    again = run_cli("db", "start", env=env)
    assert again.returncode == 0, again.stderr
    idle.close()
    with psycopg.connect(run_cli("db", "url", env=env).stdout.strip()) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)

    pid = server.pid()
    assert run_cli("db", "stop", env=env).stdout.strip() == "stopped"
    assert not _alive(pid)
    status = run_cli("db", "status", env=env)
    assert status.returncode == 3 and "stopped" in status.stdout
    assert run_cli("db", "stop", env=env).stdout.strip() == "not running"


def test_port_in_use_is_one_clear_line(server: EmbeddedServer, env: dict[str, str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli("db", "start", env={**env, "GRIDWATCH_DB_PORT": str(port)})
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"gridwatch: error: port {port} (GRIDWATCH_DB_PORT) is in use by another program: "
        "free it or choose another port"
    )


def test_datadir_of_another_user(server: EmbeddedServer, env: dict[str, str], home: Path) -> None:
    """A data folder owned by root: as root the server must run as postgres; a normal user is not root."""
    (home / "pgdata").symlink_to("/usr", target_is_directory=True)
    result = run_cli("db", "start", env=env)
    assert result.returncode == 1
    assert "belongs to user 'root'" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://nobody:x@127.0.0.1:1/none", "cannot connect to the database at 127.0.0.1:1/none"),
        ("not a url", "could not parse"),
    ],
)
def test_external_url_that_does_not_answer(url: str, message: str, env: dict[str, str]) -> None:
    result = run_cli("db", "start", env={**env, "GRIDWATCH_DATABASE_URL": url})
    assert result.returncode == 1
    assert message in result.stderr.lower() or message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_external_database_without_postgis(server_url: str, env: dict[str, str]) -> None:
    """A database where PostGIS is not available to this user gets a clear line."""
    admin = sa.engine.make_url(server_url).set(database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS gridwatch_nogis")
        conn.execute("DROP ROLE IF EXISTS gridwatch_plain")
        conn.execute("CREATE ROLE gridwatch_plain LOGIN PASSWORD 'plain'")
        conn.execute("CREATE DATABASE gridwatch_nogis OWNER gridwatch_plain")
    parsed = sa.engine.make_url(server_url)
    url = f"postgresql://gridwatch_plain:plain@{parsed.host}:{parsed.port}/gridwatch_nogis"
    try:
        result = run_cli("db", "start", env={**env, "GRIDWATCH_DATABASE_URL": url})
        assert result.returncode == 1
        assert "cannot enable PostGIS" in result.stderr and "superuser" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("DROP DATABASE IF EXISTS gridwatch_nogis WITH (FORCE)")
            conn.execute("DROP ROLE IF EXISTS gridwatch_plain")


def test_home_the_server_user_cannot_enter(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A private home (mode 700): as root, whose server runs as postgres, the cluster lives in a folder
    of its own; a normal user's server is that user, so the cluster stays in the home."""
    private = tmp_path_factory.mktemp("private")
    private.chmod(0o700)
    home = private / "home"
    env = {**{k: v for k, v in os.environ.items() if k != "GRIDWATCH_DATABASE_URL"}, "GRIDWATCH_HOME": str(home)}
    server = EmbeddedServer(Settings(home=home))
    try:
        started = run_cli("db", "start", env=env)
        assert started.returncode == 0, started.stderr
        expected = "/var/tmp/gridwatch-" if os.geteuid() == 0 else str(home)
        assert str(server.datadir).startswith(expected)
        assert (home / "db.json").exists()
        with psycopg.connect(run_cli("db", "url", env=env).stdout.strip()) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        run_cli("db", "stop", env=env)
        if server.cluster_dir != home:
            shutil.rmtree(server.cluster_dir, ignore_errors=True)


def test_a_restart_keeps_the_port_even_with_clients_connected(server: EmbeddedServer, env: dict[str, str]) -> None:
    """Clients that reconnect to the address they know find the database there again (the
    connections cut by the stop linger on the server's port for a while)."""
    assert run_cli("db", "start", env=env).returncode == 0
    first = run_cli("db", "url", env=env).stdout.strip()
    clients = [psycopg.connect(first) for _ in range(3)]
    assert run_cli("db", "stop", env=env).stdout.strip() == "stopped"
    again = run_cli("db", "start", env=env)
    assert again.returncode == 0, again.stderr
    assert run_cli("db", "url", env=env).stdout.strip() == first
    for client in clients:
        client.close()
    with psycopg.connect(first) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


@contextlib.contextmanager
def _may_fail() -> Iterator[None]:
    """Tolerates the error of a connection whose server went away, and only that."""
    try:
        yield
    except (psycopg.OperationalError, sa.exc.OperationalError) as exc:
        assert "terminating connection" in str(exc)


@pytest.mark.parametrize("opened", ["connect", "begin", "pg_connection", "pg_transaction"])
@pytest.mark.parametrize("cut", ["before the last statement", "after it"])
def test_a_connection_the_server_cut_is_dropped_without_a_failed_rollback(
        opened: str, cut: str, engine: sa.Engine, server_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """Whether SQLAlchemy saw the error or not (a psycopg call on the driver connection, or the
    server gone between the last statement and the return), the pooled connection is discarded
    quietly: no failed rollback logged when it is returned, and the pool's next connection works."""
    from gridwatch.etl import database

    def terminate(pid: int) -> None:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))

    raw = opened.startswith("pg_")
    opener = getattr(database, opened) if raw else getattr(engine, opened)
    cut_first = cut == "before the last statement"
    # Cut before, the statement fails; cut after, the rollback or commit at the end may.
    with pytest.raises((psycopg.OperationalError, sa.exc.OperationalError)) if cut_first else _may_fail():
        with opener(engine) if raw else opener() as conn:
            driver = conn if raw else conn.connection.driver_connection
            if cut_first:
                terminate(driver.info.backend_pid)
            conn.execute("SELECT 1") if raw else conn.exec_driver_sql("SELECT 1")
            if not cut_first:
                terminate(driver.info.backend_pid)
                time.sleep(0.2)  # the backend has gone before the return
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT 1").scalar() == 1
