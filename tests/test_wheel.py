"""The package as a user installs it: the wheel, in a new virtualenv (not editable), run from a folder
outside the repository, where nothing of the repository can be imported by accident."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from pathlib import Path

import pytest
from _accounts import cli_account, signed_opener

from _homes import open_to_all

REPO = Path(__file__).resolve().parents[1]
LEFT_OUT = (".git", ".venv", ".gridwatch", "build", "test-artifacts", "node_modules", "__pycache__", "*.egg-info")


def _run(cmd: list[str], *, cwd: Path, env: dict[str, str] | None = None, timeout: float = 600) -> str:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{cmd}: {result.stdout[-2000:]} {result.stderr[-2000:]}"
    return result.stdout


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(opener: urllib.request.OpenerDirector, url: str, timeout_s: float, process: subprocess.Popen) -> bytes:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, "serve stopped"
        try:
            with opener.open(url, timeout=5) as response:
                return response.read()
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"{url} did not answer within {timeout_s} s")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtualenv with the wheel installed in it; its dependencies are the test environment's."""
    work = tmp_path_factory.mktemp("wheel")
    # built from a copy: the build leaves its build/ folder there, not in the repository
    source = shutil.copytree(REPO, work / "source", ignore=shutil.ignore_patterns(*LEFT_OUT))
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(work / "dist"), str(source)], cwd=work)
    (wheel,) = (work / "dist").glob("gridwatch-*.whl")
    venv = work / "venv"
    _run([sys._base_executable, "-m", "venv", str(venv)], cwd=work)
    python = venv / "bin" / "python"
    _run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", str(wheel)], cwd=work)
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=work).strip())
    # The dependencies, without the editable gridwatch of the test environment (a path, not a site dir,
    # so its .pth hooks are not run).
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


def test_only_gridwatch_lands_in_site_packages(installed: Path) -> None:
    python = str(installed / "bin" / "python")
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=installed).strip())
    ours = {p.name for p in site.iterdir()} - {"pip", "dependencies.pth", "_distutils_hack", "distutils-precedence.pth",
                                                "setuptools", "pkg_resources"}
    ours = {name for name in ours if not name.startswith(("pip-", "setuptools-", "__pycache__"))}
    assert ours == {"gridwatch", "gridwatch-0.1.0.dist-info"}
    parts = {p.name for p in (site / "gridwatch").iterdir() if p.is_dir()}
    assert {"geo", "etl", "layers", "dashboard", "data", "bench"} <= parts
    assert (site / "gridwatch" / "dashboard" / "plotly_bundle" / "plotly-map.min.js").exists()
    assert (site / "gridwatch" / "etl" / "migrations" / "versions").is_dir()


def test_the_installed_commands_run_from_outside_the_repository(
    installed: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """db start (the embedded PostGIS), sample, etl run and serve, as a new user would run them."""
    outside = open_to_all(tmp_path_factory.mktemp("outside"), 0o777)
    gridwatch = str(installed / "bin" / "gridwatch")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("GRIDWATCH_")},
           "GRIDWATCH_HOME": str(outside / "home"), "PYTHONSAFEPATH": "1"}
    where = _run([str(installed / "bin" / "python"), "-c", "import gridwatch.etl; print(gridwatch.etl.__file__)"],
                 cwd=outside, env=env)
    assert where.startswith(str(installed)), where
    try:
        assert _run([gridwatch, "db", "start"], cwd=outside, env=env).startswith("started")
        _run([gridwatch, "sample", "--scale", "small", "--seed", "2", "--out", "region"], cwd=outside, env=env)
        summary = _run([gridwatch, "etl", "run", "--input", "region"], cwd=outside, env=env)
        assert "positions" in summary and "failed" not in summary, summary
        account = cli_account([gridwatch], env)
        port = _free_port()
        serve = subprocess.Popen([gridwatch, "serve", "--port", str(port)], cwd=outside, env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            opener = signed_opener(f"http://127.0.0.1:{port}", account)
            page = _get(opener, f"http://127.0.0.1:{port}/wall", 60, serve)
            assert b"gridwatch" in page
            units = json.loads(_get(opener, f"http://127.0.0.1:{port}/api/live", 60, serve))
            assert isinstance(units, list) and len(units) > 0
        finally:
            serve.terminate()
            serve.wait(30)
    finally:
        _run([gridwatch, "db", "stop"], cwd=outside, env=env)
