"""Set-up on a new machine, with the real programs: each system package present or missing, as root
(installed with apt-get) and as a normal user (one line naming the package and the command).

A normal user is ``nobody`` when the suite runs as root, else the suite's own user. A package is
made missing for real: PostGIS by a copy of the PostgreSQL server's programs on PATH that has no
PostGIS beside it (what a normal user meets with a PostgreSQL built elsewhere), or, as root, by
hiding its files in a private mount namespace, where apt-get then puts them back. Hiding files
needs root, so those cases are collected only when the suite runs as root (CI runs it both ways).
"""
from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gridwatch import system

from _homes import open_to_all

ROOT = os.geteuid() == 0
USERS = ["root", "user"] if ROOT else ["user"]
GRIDWATCH = [sys.executable, "-m", "gridwatch.cli"]
SYSTEM_PY = [shutil.which("python3") or sys.executable, "-I", system.__file__]
BINDIR = system.find_pg_bindir()
MAJOR = system.pg_major(BINDIR)
POSTGIS_PACKAGE = f"postgresql-{MAJOR}-postgis-3"


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDWATCH_")}
    return {**env, "GRIDWATCH_HOME": str(home), **extra}


def _as(user: str, cmd: list[str]) -> list[str]:
    """``cmd`` run by ``user``: root is the suite itself; a normal user is nobody under a root suite."""
    return ["runuser", "-u", "nobody", "--", *cmd] if user == "user" and ROOT else cmd


def _hiding(setup: str, cmd: list[str]) -> list[str]:
    """``cmd`` in a private mount namespace prepared by the shell commands ``setup`` (root only).

    The namespace's mounts are made private (nothing propagates back) where / is a mount point;
    in a chroot it is not, and the mounts keep the propagation of the chroot's own namespace.
    """
    private = "mount --make-rprivate / 2>/dev/null || true"
    return ["unshare", "-m", "--propagation", "unchanged", "sh", "-ec", f'{private}\n{setup}\nexec "$@"', "sh", *cmd]


def _run(cmd: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and "Traceback" not in result.stderr, result
    return lines[0]


@pytest.fixture
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home folder the server user (postgres as root, else the user itself) and nobody may use."""
    return open_to_all(tmp_path_factory.mktemp("setup-home"), 0o777)


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    """A folder for a hidden scenario's files, readable by the server user."""
    return open_to_all(tmp_path)


@pytest.fixture
def postgres_without_postgis(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the PostgreSQL server's programs whose share folder has no PostGIS: its bin folder."""
    top = open_to_all(tmp_path_factory.mktemp("pg"))
    bindir = top / BINDIR.relative_to("/")
    (top / system.pg_sharedir(BINDIR).relative_to("/") / "extension").mkdir(parents=True)
    bindir.mkdir(parents=True)
    for exe in ("postgres", "initdb", "pg_ctl", "pg_config"):
        shutil.copy2(BINDIR / exe, bindir / exe)
    return bindir


def _server_user(user: str) -> str:
    if user == "root":
        return "postgres"
    return "nobody" if ROOT else pwd.getpwuid(os.geteuid()).pw_name


@pytest.mark.parametrize("user", USERS)
def test_postgis_present_the_embedded_database_starts(user: str, home: Path) -> None:
    env = _env(home)
    try:
        started = _run(_as(user, [*GRIDWATCH, "db", "start"]), env)
        assert started.returncode == 0 and started.stdout.startswith("started"), started
        assert pwd.getpwuid((home / "pgdata").stat().st_uid).pw_name == _server_user(user)
    finally:
        _run(_as(user, [*GRIDWATCH, "db", "stop"]), env)


def test_postgis_missing_a_normal_user_is_told_the_package(home: Path, postgres_without_postgis: Path) -> None:
    env = _env(home, PATH=f"{postgres_without_postgis}:{os.environ['PATH']}")
    line = _one_line(_run(_as("user", [*GRIDWATCH, "db", "start"]), env))
    assert line.startswith(f"gridwatch: error: missing PostGIS for PostgreSQL {MAJOR} ({postgres_without_postgis.parents[3]}")
    assert f"run `sudo apt-get install {POSTGIS_PACKAGE}`" in line


def test_an_existing_server_needs_no_local_postgis(home: Path, postgres_without_postgis: Path, db_url: str) -> None:
    """With GRIDWATCH_DATABASE_URL nothing is started or installed here: the server has PostGIS."""
    env = _env(home, PATH=f"{postgres_without_postgis}:{os.environ['PATH']}", GRIDWATCH_DATABASE_URL=db_url)
    result = _run(_as("user", [*GRIDWATCH, "db", "start"]), env)
    assert result.returncode == 0 and "using the database at GRIDWATCH_DATABASE_URL" in result.stdout, result
    assert not (home / "pgdata").exists()


@pytest.mark.parametrize("user", USERS)
def test_browser_present_nothing_to_do(user: str, home: Path) -> None:
    result = _run(_as(user, [*SYSTEM_PY, "browser", "fonts", "venv"]), _env(home))
    assert result.returncode == 0 and result.stdout == result.stderr == "", result


def test_browser_missing_a_normal_user_is_told_the_package(home: Path, scratch: Path) -> None:
    absent = scratch / "no-chromium"
    result = _run(_as("user", [*SYSTEM_PY, "browser"]), _env(home, GRIDWATCH_CHROMIUM=str(absent)))
    assert _one_line(result) == f"gridwatch: error: missing Chromium ({absent}): run `sudo apt-get install chromium`"


if ROOT:
    EXTENSIONS = system.pg_sharedir(BINDIR) / "extension"
    WITHOUT_POSTGIS = (f'cp -a {EXTENSIONS}/. "$GW_SCRATCH"/ && rm "$GW_SCRATCH"/postgis* && '
                       f'mount --bind "$GW_SCRATCH" {EXTENSIONS}')
    # Debian's Python, whose venv module comes in the package python3.X-venv.
    DEBIAN_PYTHON = "/usr/bin/python3"
    STDLIB, MINOR = subprocess.run([DEBIAN_PYTHON, "-c", "import sys, sysconfig; print(sysconfig.get_paths()['stdlib'], "
                                    "f'{sys.version_info[0]}.{sys.version_info[1]}')"],
                                   capture_output=True, text=True, check=True).stdout.split()
    WITHOUT_VENV = ('mkdir "$GW_SCRATCH"/upper "$GW_SCRATCH"/work && mount -t overlay overlay -o '
                    f'lowerdir={STDLIB},upperdir="$GW_SCRATCH"/upper,workdir="$GW_SCRATCH"/work {STDLIB} && '
                    f'rm -r {STDLIB}/ensurepip')
    WITHOUT_CHROMIUM = ('mkdir "$GW_SCRATCH"/upper "$GW_SCRATCH"/work && mount -t overlay overlay -o '
                        'lowerdir=/usr/bin,upperdir="$GW_SCRATCH"/upper,workdir="$GW_SCRATCH"/work /usr/bin && '
                        f'rm {system.CHROMIUM}')

    def test_root_postgis_missing_is_installed_and_the_database_starts(home: Path, scratch: Path) -> None:
        env = _env(home, GW_SCRATCH=str(scratch))
        try:
            result = _run(_hiding(WITHOUT_POSTGIS, [*GRIDWATCH, "db", "start"]), env, timeout=600)
            assert result.returncode == 0, result
            assert f"gridwatch: installing {POSTGIS_PACKAGE} {POSTGIS_PACKAGE}-scripts with apt-get" in result.stdout
            assert re.search(r"^started: postgresql://", result.stdout, re.M), result.stdout
            assert (scratch / "postgis.control").exists()  # put back in the hidden folder
        finally:
            _run([*GRIDWATCH, "db", "stop"], env)

    def test_root_postgis_missing_for_a_normal_user_names_the_package(home: Path, scratch: Path) -> None:
        env = _env(home, GW_SCRATCH=str(scratch))
        line = _one_line(_run(_hiding(WITHOUT_POSTGIS, _as("user", [*GRIDWATCH, "db", "start"])), env))
        assert f"missing PostGIS for PostgreSQL {MAJOR}" in line and f"sudo apt-get install {POSTGIS_PACKAGE}" in line

    def test_root_postgres_missing_for_a_normal_user_names_the_package(home: Path) -> None:
        hide = f"mount -t tmpfs tmpfs {BINDIR.parents[1]}"  # every /usr/lib/postgresql/<major>
        line = _one_line(_run(_hiding(hide, _as("user", [*GRIDWATCH, "db", "start"])), _env(home)))
        assert line.startswith("gridwatch: error: missing the PostgreSQL server (initdb, pg_ctl, postgres): "
                               "run `sudo apt-get install postgresql`"), line

    def test_root_font_missing_is_installed_with_fontconfig(home: Path, scratch: Path) -> None:
        """The demo's labels: the CJK font, and fc-match that finds it (Chromium brings it, the demo may not)."""
        hide = WITHOUT_CHROMIUM.replace(f"rm {system.CHROMIUM}", "rm /usr/bin/fc-match")
        result = _run(_hiding(hide, [*SYSTEM_PY, "fonts"]), _env(home, GW_SCRATCH=str(scratch)), timeout=900)
        assert result.returncode == 0, result
        assert result.stdout.strip() == "gridwatch: installing fontconfig fonts-noto-cjk with apt-get ..."
        assert (scratch / "upper" / "fc-match").exists()

    def test_root_chromium_missing_is_installed(home: Path, scratch: Path) -> None:
        result = _run(_hiding(WITHOUT_CHROMIUM, [*SYSTEM_PY, "browser"]), _env(home, GW_SCRATCH=str(scratch)),
                      timeout=900)
        assert result.returncode == 0, result
        assert result.stdout.strip() == "gridwatch: installing chromium with apt-get ..."
        assert (scratch / "upper" / system.CHROMIUM.name).exists()  # the reinstalled browser, in the overlay

    def test_root_chromium_missing_for_a_normal_user_names_the_package(home: Path, scratch: Path) -> None:
        result = _run(_hiding(WITHOUT_CHROMIUM, _as("user", [*SYSTEM_PY, "browser"])),
                      _env(home, GW_SCRATCH=str(scratch)))
        assert _one_line(result) == (f"gridwatch: error: missing Chromium ({system.CHROMIUM}): "
                                     "run `sudo apt-get install chromium`")

    def test_root_venv_missing_is_installed(home: Path, scratch: Path) -> None:
        result = _run(_hiding(WITHOUT_VENV, [DEBIAN_PYTHON, "-I", system.__file__, "venv"]),
                      _env(home, GW_SCRATCH=str(scratch)))
        assert result.returncode == 0, result
        assert result.stdout.strip() == f"gridwatch: installing python{MINOR}-venv with apt-get ..."
        assert (scratch / "upper" / "ensurepip" / "__init__.py").exists()  # put back, in the overlay

    def test_root_venv_missing_for_a_normal_user_names_the_package(home: Path, scratch: Path) -> None:
        result = _run(_hiding(WITHOUT_VENV, _as("user", [DEBIAN_PYTHON, "-I", system.__file__, "venv"])),
                      _env(home, GW_SCRATCH=str(scratch)))
        assert _one_line(result) == (f"gridwatch: error: missing Python {MINOR}'s venv module: "
                                     f"run `sudo apt-get install python{MINOR}-venv`")
