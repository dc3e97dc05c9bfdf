"""What the benchmarks share: a scratch database, the generated sample, the app served on a
free port, and an offline headless Chromium (Debian's, driven by Playwright; no browser download)."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import numpy as np
import sqlalchemy as sa

from gridwatch.errors import GridwatchError
from gridwatch.etl.database import engine_for, scratch_database
from gridwatch.settings import Settings
from gridwatch.system import CHROMIUM, SetupError, chromium, ensure

if TYPE_CHECKING:
    from gridwatch.etl.manifest import Manifest
    from gridwatch.etl.runner import JobResult

__all__ = ["bench_engine", "bench_sample", "load_sample", "serving", "offline_browser", "offline_page",
           "new_account", "sign_in", "callback_body", "dependency_key", "free_port",
           "IngestProcess", "SmallDisk", "INTERACTIVE", "CHROMIUM", "CHROMIUM_ARGS"]

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
# In the page: navigation-start milliseconds once the map is fitted to the region (zoomed in from the
# initial view, centre inside the bounds), every tile is loaded and the live units are drawn; else false.
INTERACTIVE = """(b) => {
    const m = window.gridwatch && window.gridwatch.map();
    if (!m || !m.loaded() || !m.areTilesLoaded() || m.getZoom() <= 4) { return false; }
    const c = m.getCenter();
    if (c.lng < b[0] || c.lng > b[2] || c.lat < b[1] || c.lat > b[3]) { return false; }
    const gd = document.querySelector('#wall-map .js-plotly-plot');
    const drawn = (gd.data || []).some(t => t.mode === 'markers' && (t.lon || []).length > 0);
    return drawn ? performance.now() : false;
}"""


def bench_sample(settings: Settings, scale: str) -> Path:
    """The sample folder of ``scale``, generated on first use by this version of the generator (a
    changed generator makes a new one, so a benchmark never runs on a sample its reference was not made from)."""
    import gridwatch.data
    from gridwatch.data import fixed_end, generate_sample

    source = hashlib.sha256()
    for path in sorted(Path(gridwatch.data.__file__).parent.glob("*.py")):
        source.update(path.read_bytes())
    folder = settings.home_dir / "bench" / f"sample-{scale}-{source.hexdigest()[:12]}"
    if not (folder / "manifest.json").exists():
        for older in folder.parent.glob(f"sample-{scale}*"):  # an older generator's
            shutil.rmtree(older)
        generate_sample(folder, seed=1, scale=scale, end=fixed_end(1))
    return folder


def load_sample(engine: sa.Engine, manifest: Manifest, *, settings: Settings) -> list[JobResult]:
    """``etl run`` of a bench sample's ``manifest``: each job's result. A run that leaves a job
    undone (a file refused, a job skipped) is an error, as figures of part of the data mislead."""
    from gridwatch.etl.runner import run_manifest

    results = run_manifest(engine, manifest, settings=settings, progress=True)
    undone = [r.job for r in results if r.status != "ok"]
    if undone:
        why = [f.describe() for r in results for f in r.files if f.status in ("refused", "skipped")]
        raise GridwatchError(f"the sample's etl run left {', '.join(undone)} undone, so nothing is measured "
                             f"({why[0] if why else 'no file named'})")
    return results


@contextmanager
def bench_engine(settings: Settings) -> Iterator[sa.Engine]:
    """An engine on a scratch database, dropped afterwards."""
    with scratch_database(settings, prefix="gridwatch_bench") as url:
        engine = engine_for(url)
        try:
            yield engine
        finally:
            engine.dispose()


@contextmanager
def serving(flask_app) -> Iterator[str]:
    """Serve a Flask app on a free localhost port in a thread; yields its base URL."""
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = make_server("127.0.0.1", 0, flask_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)


@contextmanager
def offline_browser() -> Iterator[object]:
    """Headless Chromium (Playwright); Chromium is installed as root, else the fix is named."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as error:
        raise GridwatchError("the page figures need the Python package playwright: pip install -e '.[test]' "
                             "(it drives the system Chromium; no browser download)") from error
    try:
        ensure([chromium()])
    except SetupError as exc:
        raise GridwatchError(f"the page figures need Chromium: {exc}") from None
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def new_account(engine: sa.Engine, role: str = "viewer", *, unit: str | None = None) -> tuple[str, str]:
    """A new account of ``role`` (in the top command unit, or ``unit``) with a random name and password."""
    from gridwatch.etl.accounts import add_account

    name, password = f"{role}-{secrets.token_hex(4)}", secrets.token_urlsafe(16)
    with engine.begin() as conn:
        add_account(conn, name, role, password, unit=unit, actor="bench")
    return name, password


def dependency_key(dependency: dict) -> str:
    """The ``"id.property"`` a Dash callback dependency is named by (in ``changedPropIds``, say)."""
    return f"{dependency['id']}.{dependency['property']}"


def callback_body(app, name: str, values: dict[str, object] | None = None) -> dict:
    """A ``_dash-update-component`` body for the server callback ``name`` (its
    :func:`~gridwatch.dashboard.access.callback_id`) as a page sends it: its inputs, states and outputs
    as registered (Dash registers them at its first request), each valued from ``values`` (by
    :func:`dependency_key`) or unset, the valued inputs changed; a wildcard input matches no component."""
    from gridwatch.dashboard.access import callback_id

    output, entry = next((key, entry) for key, entry in app.callback_map.items()
                         if "callback" in entry and callback_id(entry["callback"]) == name)
    values = values or {}

    def sent(dependencies: list[dict]) -> list:
        return [[] if d["id"].startswith("{") else {**d, "value": values.get(dependency_key(d))} for d in dependencies]

    multi = isinstance(entry["output"], list)
    outputs = [{"id": o.component_id, "property": o.component_property}
               for o in (entry["output"] if multi else [entry["output"]])]
    return {"output": output, "outputs": outputs if multi else outputs[0],
            "inputs": sent(entry["inputs"]), "state": sent(entry["state"]),
            "changedPropIds": [dependency_key(d) for d in entry["inputs"] if dependency_key(d) in values]}


def sign_in(context, base_url: str, account: tuple[str, str]) -> None:
    """Sign a Playwright browser context in as ``account`` (name, password): its pages then are."""
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(base_url))
    response = context.request.post(f"{origin}/login", form={"name": account[0], "password": account[1]},
                                    headers={"Origin": origin}, max_redirects=0)
    if response.status != 303:
        raise GridwatchError(f"signing in as {account[0]} answered {response.status}")


def offline_page(browser, base_url: str, *, account: tuple[str, str], viewport: tuple[int, int] = (1920, 1080)):
    """A page in a new (cold) context, signed in as ``account``, that may only talk to ``base_url``:
    (context, page, refused URLs)."""
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(base_url))
    offsite: list[str] = []

    def route(r) -> None:
        url = r.request.url
        if url == origin or url.startswith(origin + "/"):
            r.continue_()
        else:
            offsite.append(url)
            r.abort()

    context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
    context.route("**/*", route)
    sign_in(context, base_url, account)
    return context, context.new_page(), offsite


def p95_ms(samples: list[float]) -> float:
    """The 95th percentile of times in seconds, in milliseconds."""
    return float(np.percentile(samples, 95)) * 1000


def timed(call, n: int) -> list[float]:
    """The seconds each of ``n`` calls of ``call`` took."""
    times = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def free_port() -> int:
    """A TCP port nothing listens on (on 127.0.0.1), now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class IngestProcess:
    """``gridwatch ingest`` in a subprocess with its spool under ``home``, against ``url`` (None: the
    embedded server of ``home``), with settings ``env`` (``GRIDWATCH_*``) and its command run by
    ``wrap`` (e.g. in a mount namespace of its own). Its output goes to ``home/ingest.log``. With
    ``cafile`` (the CA of the certificate given with ``--tls-cert``) it is reached over HTTPS."""

    def __init__(self, url: str | None, home: Path, *args: str, env: dict[str, str] | None = None,
                 wrap: tuple[str, ...] = (), cafile: Path | None = None) -> None:
        self.url, self.home, self.args, self.env, self.wrap = url, home, args, env or {}, wrap
        self.http_port, self.cot_port, self.cot_tls_port = free_port(), free_port(), free_port()
        self.tls = ssl.create_default_context(cafile=cafile) if cafile else None
        self.proc: subprocess.Popen | None = None
        self.log = home / "ingest.log"

    @property
    def base(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.http_port}"

    def start(self, *, timeout_s: float = 30.0) -> IngestProcess:
        """Start the service and wait until it answers."""
        env = {k: v for k, v in os.environ.items() if k != "GRIDWATCH_DATABASE_URL"}
        env.update({"GRIDWATCH_HOME": str(self.home)}, **({"GRIDWATCH_DATABASE_URL": self.url} if self.url else {}),
                   **self.env)
        cmd = [*self.wrap, sys.executable, "-m", "gridwatch.cli", "ingest",
               "--http-port", str(self.http_port), "--cot-port", str(self.cot_port),
               "--cot-tls-port", str(self.cot_tls_port), *self.args]
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ingest exited: {self.log.read_text()[-2000:]}")
            try:
                self.stats()
                return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"ingest did not come up within {timeout_s:g} s")

    def stats(self) -> dict:
        """``/api/ingest/stats``."""
        with urllib.request.urlopen(f"{self.base}/api/ingest/stats", timeout=5, context=self.tls) as response:
            return json.loads(response.read())

    def wait_drained(self, *, timeout: float = 60.0) -> dict:
        """Wait until the writer has committed everything spooled; return the stats."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            stats = self.stats()
            if stats["spool"]["backlog"] == 0 and stats["db_up"]:
                return stats
            time.sleep(0.05)
        raise TimeoutError(f"the ingest backlog was not drained in {timeout:g} s: {self.stats()}")

    def kill(self) -> None:
        """SIGKILL, as a crash."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, *, timeout: float = 30.0) -> int:
        """SIGTERM, a clean stop; its exit code."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def stop(self) -> None:
        """Make sure it is gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class SmallDisk:
    """A tmpfs of ``size`` on ``folder`` in a mount namespace of its own (needs root): pass :attr:`wrap` to
    :class:`IngestProcess`, then :meth:`fill` and :meth:`free` it from outside while the service runs.

    The helper joins the service's namespace with its root too: inside a chroot, joining a mount
    namespace alone would put it at the real root, where ``folder`` is another directory.
    """

    def __init__(self, folder: Path, size: str = "1m") -> None:
        self.folder = folder
        self.wrap = ("unshare", "-m", "--propagation", "unchanged", "sh", "-ec",
                     'mount --make-rprivate / 2>/dev/null || true; mkdir -p "$0"; '
                     f'mount -t tmpfs -o size={size} tmpfs "$0"; exec "$@"', str(folder))

    def fill(self, service: IngestProcess) -> None:
        """Fill the disk to the last block."""
        self._inside(service, 'dd if=/dev/zero of="$1/filler" bs=4096 2>/dev/null || true; test -s "$1/filler"')

    def free(self, service: IngestProcess) -> None:
        """Give the room back."""
        self._inside(service, 'rm "$1/filler"')

    def _inside(self, service: IngestProcess, script: str) -> None:
        subprocess.run(["nsenter", "-t", str(service.proc.pid), "-m", "-r", "--", "sh", "-ec", script, "sh",
                        str(self.folder)], check=True, timeout=30, capture_output=True)


def seed_plan_region(engine: sa.Engine, plan) -> None:
    """Fill the (empty) map tables with the townships, police areas and grids of a synthetic plan
    (:func:`gridwatch.data.plan_township.plan_township`), its faces as one department's source grids,
    so that the planner's own set-up (:func:`gridwatch.etl.plan.build_faces`) cuts the same faces."""
    import geopandas as gpd
    import pandas as pd
    import shapely

    from gridwatch.etl._copy import copy_rows
    from gridwatch.etl.database import pg_transaction
    from gridwatch.geo.plan import grid_geometries

    faces = plan.faces

    def union_by(column: str) -> gpd.GeoSeries:
        return faces.dissolve(column).geometry

    towns, areas, grids = union_by("township"), union_by("police_area"), grid_geometries(plan)
    whole = shapely.union_all(towns.to_numpy())
    attrs = plan.grids.loc[grids.index]
    table = pd.DataFrame({"code": grids.index, "township": attrs["township"].to_numpy(),
                          "workers": attrs["workers"].to_numpy(),
                          "households": pd.Series(plan.faces["households"].to_numpy()).groupby(plan.grid).sum()
                          .reindex(grids.index).round().astype(int).to_numpy(),
                          "population": pd.Series(plan.faces["population"].to_numpy()).groupby(plan.grid).sum()
                          .reindex(grids.index).round().astype(int).to_numpy(),
                          "wkb": shapely.to_wkb(grids.to_numpy())})
    with pg_transaction(engine) as conn:
        top = conn.execute("INSERT INTO command_unit (level, parent_id, code, name, geom) VALUES "
                           "('prefecture', NULL, 'P', 'Prefecture', ST_Multi(ST_GeomFromWKB(%(g)s, 4326))) RETURNING id",
                           {"g": shapely.to_wkb(whole)}).fetchone()[0]
        county = conn.execute("INSERT INTO command_unit (level, parent_id, code, name, geom) VALUES "
                              "('county', %(p)s, 'C', 'County', ST_Multi(ST_GeomFromWKB(%(g)s, 4326))) RETURNING id",
                              {"p": top, "g": shapely.to_wkb(whole)}).fetchone()[0]
        for code, geom in towns.items():  # a few townships
            conn.execute("INSERT INTO command_unit (level, parent_id, code, name, geom) VALUES "
                         "('township', %(p)s, %(c)s, %(c)s, ST_Multi(ST_GeomFromWKB(%(g)s, 4326)))",
                         {"p": county, "c": code, "g": shapely.to_wkb(geom)})
            conn.execute("INSERT INTO command_unit (level, parent_id, code, name, geom) SELECT 'station', id, "
                         "%(s)s, %(s)s, geom FROM command_unit WHERE code = %(c)s", {"c": code, "s": f"{code}-S"})
        conn.execute("CREATE TEMP TABLE seed (code text, geom bytea) ON COMMIT DROP")
        copy_rows(conn, "seed", pd.DataFrame({"code": areas.index, "geom": shapely.to_wkb(areas.to_numpy())}))
        conn.execute("INSERT INTO police_area (code, station_id, geom) SELECT s.code, st.id, "
                     "ST_Multi(ST_GeomFromWKB(s.geom, 4326)) FROM seed s JOIN command_unit st "
                     "ON st.code = split_part(s.code, '-', 1) || '-S'")
        conn.execute("CREATE TEMP TABLE seed_grid (code text, township text, workers int, households int, "
                     "population int, wkb bytea) ON COMMIT DROP")
        copy_rows(conn, "seed_grid", table)
        conn.execute("INSERT INTO grid (code, township_id, households, population, workers, geom) "
                     "SELECT s.code, t.id, s.households, s.population, s.workers, "
                     "ST_Multi(ST_GeomFromWKB(s.wkb, 4326)) FROM seed_grid s JOIN command_unit t ON t.code = s.township")
        conn.execute("UPDATE grid g SET police_area_id = (SELECT p.id FROM police_area p "
                     "WHERE ST_Contains(p.geom, ST_PointOnSurface(g.geom)) LIMIT 1)")
        conn.execute("CREATE TEMP TABLE seed_source (code text, households int, population int, wkb bytea) "
                     "ON COMMIT DROP")
        copy_rows(conn, "seed_source", pd.DataFrame({
            "code": faces["face_id"].astype(str).to_numpy(),
            "households": faces["households"].round().astype(int).to_numpy(),
            "population": faces["population"].round().astype(int).to_numpy(),
            "wkb": shapely.to_wkb(faces.geometry.to_numpy())}))
        conn.execute("INSERT INTO grid_source (department, source_code, households, population, geom) "
                     "SELECT 'civil affairs', code, households, population, ST_Multi(ST_GeomFromWKB(wkb, 4326)) "
                     "FROM seed_source")
