"""The embedded PostGIS server: a private PostgreSQL cluster under the home folder.

The cluster lives in ``<home>/pgdata`` and listens on 127.0.0.1 only, on a free
port chosen when it starts (or ``GRIDWATCH_DB_PORT``). Its password and port
are kept in ``<home>/db.json`` (mode 600). PostgreSQL refuses to run as root,
so when this process is root the server runs as the ``postgres`` system user.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import pwd
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from gridwatch import system
from gridwatch.errors import DatabaseError
from gridwatch.settings import Settings, get_settings

__all__ = ["EmbeddedServer", "database_url"]

DB_USER = "gridwatch"
SERVER_USER_WHEN_ROOT = "postgres"
SERVER_CONF = """
# gridwatch: tuned for bulk ETL on a small machine
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
shared_buffers = 512MB
work_mem = 64MB
maintenance_work_mem = 512MB
max_wal_size = 4GB
checkpoint_timeout = 15min
wal_compression = on
effective_cache_size = 4GB
random_page_cost = 1.1
jit = off
max_connections = 100
logging_collector = off
"""


def _bindir() -> Path:
    """The PostgreSQL server's programs (:func:`gridwatch.system.find_pg_bindir`), as a DatabaseError when absent."""
    try:
        return system.find_pg_bindir()
    except system.SetupError as exc:
        raise DatabaseError(str(exc)) from None


def _run(cmd: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=check)


def _port_free(port: int) -> bool:
    """True when nothing listens on ``port``. Connections of a server just stopped may linger
    (TIME_WAIT); like PostgreSQL's own listen socket, the probe may bind over them."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class EmbeddedServer:
    """A private PostgreSQL + PostGIS cluster under ``settings.home``."""

    settings: Settings

    # -- places -------------------------------------------------------------
    @property
    def home(self) -> Path:
        return self.settings.home_dir

    @property
    def cluster_dir(self) -> Path:
        """Where the cluster's files live: the home folder, or, when the server runs as
        another user who cannot enter the home folder, a folder of its own keyed by the home."""
        if not self._as_root or _enterable(self.home, self._server_user()):
            return self.home
        key = hashlib.sha256(str(self.home).encode()).hexdigest()[:12]
        return Path("/var/tmp") / f"gridwatch-{key}"

    @property
    def datadir(self) -> Path:
        return self.cluster_dir / "pgdata"

    @property
    def state_file(self) -> Path:
        return self.home / "db.json"

    @property
    def logfile(self) -> Path:
        return self.cluster_dir / "postgres.log"

    # -- state --------------------------------------------------------------
    def _state(self) -> dict:
        if self.state_file.exists():
            return json.loads(self.state_file.read_text())
        return {}

    def _save_state(self, state: dict) -> None:
        self.state_file.write_text(json.dumps(state, indent=2))
        self.state_file.chmod(0o600)

    def url(self) -> str:
        """The libpq URL of the cluster (whether or not it is running)."""
        state = self._state()
        if not state:
            raise DatabaseError("the embedded database was never started: run `gridwatch db start`")
        return (
            f"postgresql://{DB_USER}:{state['password']}@127.0.0.1:{state['port']}"
            f"/{self.settings.db_name}"
        )

    # -- the server user ------------------------------------------------------
    @property
    def _as_root(self) -> bool:
        return os.geteuid() == 0

    def _server_user(self) -> pwd.struct_passwd:
        if not self._as_root:
            return pwd.getpwuid(os.geteuid())
        try:
            return pwd.getpwnam(SERVER_USER_WHEN_ROOT)
        except KeyError:
            raise DatabaseError(
                "PostgreSQL refuses to run as root and there is no 'postgres' system user: "
                "create one (useradd --system postgres) or run gridwatch as a normal user"
            ) from None

    def _cmd(self, bindir: Path, exe: str, *args: str) -> list[str]:
        cmd = [str(bindir / exe), *args]
        if self._as_root:
            return ["runuser", "-u", SERVER_USER_WHEN_ROOT, "--", *cmd]
        return cmd

    def _check_owner(self, user: pwd.struct_passwd) -> None:
        if self.datadir.exists() and self.datadir.stat().st_uid != user.pw_uid:
            owner = self.datadir.stat().st_uid
            try:
                owner_name = pwd.getpwuid(owner).pw_name
            except KeyError:
                owner_name = str(owner)
            raise DatabaseError(
                f"the data folder {self.datadir} belongs to user '{owner_name}', but the server "
                f"must run as '{user.pw_name}': use another GRIDWATCH_HOME, or "
                f"`chown -R {user.pw_name} {self.datadir}`"
            )

    # -- PostGIS --------------------------------------------------------------
    @staticmethod
    def _postgres() -> Path:
        """The server's programs, with PostGIS (installed as root when missing, else the fix is named)."""
        try:
            return system.ensure_postgres()
        except system.SetupError as exc:
            raise DatabaseError(f"{exc} (or `conda install -c conda-forge postgresql postgis`, or set "
                                "GRIDWATCH_DATABASE_URL to an existing PostGIS server)") from None

    # -- lifecycle ----------------------------------------------------------
    def is_running(self) -> bool:
        """True when the cluster's postmaster is alive (a zombie is not)."""
        pid = self.pid()
        return pid is not None and _alive(pid)

    def _clear_stale_pidfile(self) -> None:
        """Remove the pid file a killed postmaster left behind, and end its orphaned
        backends (they keep its shared memory, and the new server would refuse to start)."""
        pid = self.pid()
        if pid is not None and not _alive(pid):
            (self.datadir / "postmaster.pid").unlink(missing_ok=True)
            _end_orphans(self.datadir)

    def _init(self, bindir: Path, user: pwd.struct_passwd) -> None:
        password = secrets.token_urlsafe(18)
        self.datadir.mkdir(mode=0o700, parents=True, exist_ok=True)
        pwfile = self.cluster_dir / ".pwfile"
        pwfile.write_text(password + "\n")
        if self._as_root:
            os.chown(self.datadir, user.pw_uid, user.pw_gid)
            os.chown(pwfile, user.pw_uid, user.pw_gid)
        pwfile.chmod(0o600)
        try:
            result = _run(
                self._cmd(
                    bindir, "initdb", "-D", str(self.datadir), "-U", DB_USER,
                    f"--pwfile={pwfile}", "--auth=scram-sha-256", "-E", "UTF8", "--no-locale",
                ),
                check=False,
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise DatabaseError(f"initdb failed in {self.datadir}: {result.stderr.strip().splitlines()[-1]}")
        with open(self.datadir / "postgresql.conf", "a") as conf:
            conf.write(SERVER_CONF)
        self._save_state({"password": password, "port": None})

    def _choose_port(self) -> int:
        wanted = self.settings.db_port
        if wanted is not None:
            if not _port_free(wanted):
                raise DatabaseError(
                    f"port {wanted} (GRIDWATCH_DB_PORT) is in use by another program: "
                    "free it or choose another port"
                )
            return wanted
        saved = self._state().get("port")
        if saved and _port_free(saved):
            return int(saved)
        return _free_port()

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """One start or stop at a time per home (two commands starting the cluster at once wait in turn)."""
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.home / "server.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def start(self) -> bool:
        """Start the cluster (creating it first); False when it was already running."""
        with self._exclusive():
            return self._start()

    def _start(self) -> bool:
        bindir = self._postgres()
        user = self._server_user()
        self.cluster_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        self._check_owner(user)
        if not (self.datadir / "PG_VERSION").exists():
            self._init(bindir, user)
        elif self.is_running():
            return False
        self._clear_stale_pidfile()
        port = self._choose_port()
        self.logfile.touch()
        if self._as_root:
            os.chown(self.logfile, user.pw_uid, user.pw_gid)
        start = self._cmd(
            bindir, "pg_ctl", "start", "-w", "-t", "60", "-D", str(self.datadir),
            "-l", str(self.logfile), "-o", f"-p {port}",
        )
        # After a kill -9 the orphaned backends may hold shared memory a few seconds.
        deadline = time.monotonic() + 20
        while True:
            result = _run(start, check=False)
            if result.returncode == 0:
                break
            if time.monotonic() > deadline or "still in use" not in self._log_tail():
                raise DatabaseError(f"the database did not start: {self._log_tail() or result.stderr.strip()} (log: {self.logfile})")
            time.sleep(1)
        self._save_state({**self._state(), "port": port})
        self._create_database()
        return True

    def _log_tail(self) -> str:
        """The last error of the server log (else its last line)."""
        if not self.logfile.exists():
            return ""
        lines = self.logfile.read_text(errors="replace").splitlines()
        errors = [ln for ln in lines if "FATAL" in ln or "ERROR" in ln or "PANIC" in ln]
        return (errors or lines or [""])[-1].strip()

    def _create_database(self) -> None:
        import psycopg

        state = self._state()
        admin = f"postgresql://{DB_USER}:{state['password']}@127.0.0.1:{state['port']}/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (self.settings.db_name,)
            ).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{self.settings.db_name}"')

    def stop(self) -> bool:
        """Stop the cluster; False when it was not running."""
        with self._exclusive():
            return self._stop()

    def _stop(self) -> bool:
        if not self.is_running():
            self._clear_stale_pidfile()
            return False
        bindir = _bindir()
        result = _run(self._cmd(bindir, "pg_ctl", "stop", "-w", "-m", "fast", "-D", str(self.datadir)), check=False)
        if result.returncode != 0:
            raise DatabaseError(f"the database did not stop: {result.stderr.strip()}")
        return True

    def pid(self) -> int | None:
        """The postmaster's pid, from its pid file."""
        try:
            return int((self.datadir / "postmaster.pid").read_text().split()[0])
        except (FileNotFoundError, IndexError, ValueError):
            return None


def database_url(settings: Settings | None = None) -> str:
    """The libpq URL in use: ``GRIDWATCH_DATABASE_URL`` or the embedded cluster's (no database driver imported)."""
    settings = settings or get_settings()
    if settings.database_url:
        return settings.database_url
    return EmbeddedServer(settings).url()


def _end_orphans(datadir: Path, timeout_s: float = 10.0) -> None:
    """SIGKILL the server processes left running in ``datadir`` (their working folder)."""
    target = str(datadir.resolve())
    orphans = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if os.readlink(proc / "cwd") == target:
                orphans.append(int(proc.name))
        except OSError:
            continue
    for pid in orphans:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(_alive(pid) for pid in orphans):
        time.sleep(0.1)


def _enterable(folder: Path, user: pwd.struct_passwd) -> bool:
    """True when ``user`` may walk from / down into ``folder`` (x on every folder on the way)."""
    for step in [*reversed(folder.parents), folder]:
        if not step.exists():
            return True  # created by us below an enterable parent, with mode 755
        info = step.stat()
        if not (info.st_mode & 0o001 or (info.st_mode & 0o010 and info.st_gid == user.pw_gid)
                or info.st_uid == user.pw_uid):
            return False
    return True


def _alive(pid: int) -> bool:
    """True when ``pid`` is a running (not zombie) PostgreSQL server process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X") and (b"postgres" in cmdline or b"postmaster" in cmdline)
