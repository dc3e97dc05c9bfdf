"""The ``gridwatch`` command. Expected failures print one line and exit 1.

Each command imports what it needs when it runs, so ``gridwatch --help`` and the ``db`` commands
start without loading pydantic's settings (for help), the database drivers, geopandas or Dash.
"""
from __future__ import annotations

import faulthandler
import os
import signal
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import click

from gridwatch.errors import GridwatchError

if TYPE_CHECKING:
    from gridwatch.settings import Settings

__all__ = ["main", "cli"]


def get_settings() -> Settings:
    """The settings (:func:`gridwatch.settings.get_settings`), imported when a command first needs them."""
    from gridwatch.settings import get_settings as settings

    return settings()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """gridwatch: grid-management and border-defence situational dashboard."""


# -- database ------------------------------------------------------------------
@cli.group()
def db() -> None:
    """The database: the embedded PostGIS, or GRIDWATCH_DATABASE_URL."""


@db.command("start")
def db_start() -> None:
    """Start the embedded PostGIS (a no-op when running) and migrate the schema."""
    from gridwatch.etl.database import database_url, ensure_database
    from gridwatch.etl.server import EmbeddedServer

    settings = get_settings()
    if settings.database_url:
        ensure_database(settings)
        click.echo("using the database at GRIDWATCH_DATABASE_URL; nothing to start")
        return
    started = EmbeddedServer(settings).start()
    ensure_database(settings)
    click.echo(("started" if started else "already running") + f": {database_url(settings)}")


@db.command("stop")
def db_stop() -> None:
    """Stop the embedded PostGIS."""
    from gridwatch.etl.server import EmbeddedServer

    stopped = EmbeddedServer(get_settings()).stop()
    click.echo("stopped" if stopped else "not running")


@db.command("status")
def db_status() -> None:
    """Say whether the database runs, and where."""
    from gridwatch.etl.server import EmbeddedServer

    settings = get_settings()
    if settings.database_url:
        from gridwatch.etl.database import check_postgis, engine_for

        version = check_postgis(engine_for(settings.database_url))
        click.echo(f"external database up, PostGIS {version}")
        return
    server = EmbeddedServer(settings)
    if server.is_running():
        click.echo(f"running (pid {server.pid()}) at {server.url()}, data in {server.datadir}")
    else:
        click.echo(f"stopped; data in {server.datadir}")
        sys.exit(3)


@db.command("url")
def db_url() -> None:
    """Print the database URL in use."""
    from gridwatch.etl.server import database_url

    click.echo(database_url(get_settings()))


@db.command("upgrade")
def db_upgrade() -> None:
    """Migrate the schema to the newest revision."""
    from gridwatch.etl.database import ensure_database

    ensure_database(get_settings())
    click.echo("schema up to date")


# -- dashboard -----------------------------------------------------------------
def _tls_options(command):
    """``--tls-cert`` and ``--tls-key``, defaulting to GRIDWATCH_TLS_CERT and GRIDWATCH_TLS_KEY."""
    command = click.option("--tls-key", type=click.Path(path_type=Path), default=None,
                           help="Its private key (PEM, unencrypted, a file of mode 600); default GRIDWATCH_TLS_KEY.")(command)
    return click.option("--tls-cert", type=click.Path(path_type=Path), default=None,
                        help="Serve HTTPS with this certificate (PEM, chain after it); default GRIDWATCH_TLS_CERT.")(command)


def _tls_pair(cert: Path | None, key: Path | None) -> tuple[Path | None, Path | None]:
    """The certificate and key to serve HTTPS with (the options, else the settings), both or neither."""
    settings = get_settings()
    cert, key = cert or settings.tls_cert, key or settings.tls_key
    if (cert is None) != (key is None):
        raise click.UsageError("give --tls-cert and --tls-key together (or neither, for plain HTTP)")
    return cert, key


@cli.command()
@click.option("--host", default=None, help="Interface to listen on (default 127.0.0.1).")
@click.option("--port", default=None, type=int, help="Port (default 8050).")
@_tls_options
def serve(host: str | None, port: int | None, tls_cert: Path | None, tls_key: Path | None) -> None:
    """Serve the dashboard against the configured database (HTTPS with --tls-cert and --tls-key)."""
    from gridwatch.dashboard.app import run

    settings = get_settings()
    tls_cert, tls_key = _tls_pair(tls_cert, tls_key)
    run(host=host or settings.host, port=port or settings.port, tls_cert=tls_cert, tls_key=tls_key)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


@cli.command()
@click.option("--seed", default=1, type=int, show_default=True, help="Sample region seed.")
@click.option("--scale", default="prefecture", show_default=True, help="small, prefecture or province.")
@click.option("--host", default=None, help="Interface the dashboard listens on (default 127.0.0.1).")
@click.option("--port", default=None, type=int, help="Dashboard port (default 8050).")
@click.option("--no-serve", is_flag=True, help="Load the demo data, then exit.")
def demo(seed: int, scale: str, host: str | None, port: int | None, no_serve: bool) -> None:
    """Start the database, generate and load a sample region that ends now, then serve the
    dashboard with a live feed (ingest service + simulator)."""
    from gridwatch.dashboard.app import run
    from gridwatch.demo import demo_accounts, live_feed, prepare_demo

    settings = get_settings()
    folder = prepare_demo(settings, seed=seed, scale=scale)
    host, port = host or settings.host, port or settings.port
    demo_accounts(settings, base_url=f"http://{host}:{port}")
    if no_serve:
        return
    signal.signal(signal.SIGTERM, _exit_on_sigterm)  # stop the live feed's children too
    with live_feed(settings, folder):
        click.echo(f"dashboard on http://{host}:{port}/  (Ctrl-C stops)")
        run(host=host, port=port)


@cli.command()
@click.option("--seed", default=1, type=int, show_default=True, help="An integer: same seed, same files.")
@click.option("--scale", default="prefecture", show_default=True, help="small, prefecture or province.")
@click.option("--end", default=None,
              help="Time of the last fix: ISO 8601 (a time without a zone is in the site's zone) or 'now'. "
                   "Default: now, rounded down to the minute. The same seed and --end give the same files.")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Output folder.")
def sample(seed: int, scale: str, end: str | None, out_dir: Path) -> None:
    """Write the fictional sample region and its manifest."""
    from gridwatch.data import generate_sample

    manifest = generate_sample(out_dir, seed=seed, scale=scale, progress=True,
                               end=None if end in (None, "now") else _when(end))
    click.echo(f"wrote {manifest}")


@cli.command()
@click.argument("name")
@click.option("--scale", default="prefecture", show_default=True, help="Sample scale to measure on.")
def bench(name: str, scale: str) -> None:
    """Run a benchmark (sample, etl, tiles, ...) and print its figures; `all` runs them in turn."""
    from gridwatch.bench import format_figures, run_all, run_benchmark

    if name == "all":
        run_all(get_settings(), scale=scale, echo=click.echo)
    else:
        click.echo(format_figures(run_benchmark(name, get_settings(), scale=scale)))


# -- ETL -------------------------------------------------------------------------
@cli.group()
def etl() -> None:
    """Load, check, fuse and derive: the ETL jobs."""


def _engine():
    from gridwatch.etl.database import ensure_database

    return ensure_database(get_settings())


def _when(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 time such as 2026-11-20T08:00:00+08:00") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=ZoneInfo(get_settings().timezone))


def _fail_on_refusals(outcomes: list, what: str) -> None:
    """Exit with one line when any file was refused or skipped (the outcomes were printed above)."""
    refused = sum(o.status == "refused" for o in outcomes)
    skipped = sum(o.status == "skipped" for o in outcomes)
    if refused or skipped:
        parts = [f"{n} {word}" for n, word in ((refused, "refused"), (skipped, "skipped")) if n]
        raise GridwatchError(f"{what}: {' and '.join(parts)} (see above; the rest is loaded): "
                             "fix those files and run again")


@etl.command("run")
@click.option("--input", "input_dir", required=True, type=click.Path(path_type=Path), help="Folder with manifest.json.")
@click.option("--as-of", default=None, help="Judge coverage at this time (default: the export time, else now).")
@click.option("--since", default=None,
              help="Incremental: only position and incident files changed since this time (ISO 8601).")
@click.option("--force", is_flag=True, help="Load every file again, even those already loaded unchanged.")
def etl_run(input_dir: Path, as_of: str | None, since: str | None, force: bool) -> None:
    """Run every job in order on a folder of inputs described by its manifest.

    A file that cannot be read is refused and the run goes on with the others and with the
    jobs that do not need it; each file's outcome is listed, and the command exits 1 when
    anything was refused.
    """
    from gridwatch.etl.manifest import read_manifest
    from gridwatch.etl.runner import format_files, format_summary, run_manifest

    manifest = read_manifest(input_dir)
    if since is not None:
        manifest = manifest.feeds_since(_when(since))
    engine = _engine()

    def report(r) -> None:
        status = "" if r.status == "ok" else f" [{r.status}]"
        click.echo(f"  {r.job}: {r.rows_loaded:,} loaded, {r.rows_rejected:,} rejected ({r.seconds:.1f} s){status}")

    results = run_manifest(engine, manifest, settings=get_settings(), as_of=_when(as_of), progress=True,
                           force=force, on_job=report)
    click.echo("files:")
    click.echo(format_files(results))
    click.echo(format_summary(results))
    _fail_on_refusals([f for r in results for f in r.files], "etl run")


@etl.command("import")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--target", "--layer", "target", required=True,
              help="The gridwatch layer to load into: grid_source, command_unit, zone, ... (--layer is the old name).")
@click.option("--source-layer", default=None,
              help="The layer to read from a file with several (GeoPackage, ...); default: its only layer, "
                   "or the one named like the target.")
@click.option("--crs", default=None, help="The file's CRS when it declares none or declares a wrong one (e.g. EPSG:4542).")
@click.option("--encoding", default=None, help="Attribute text encoding (e.g. gbk); detected for Shapefiles.")
@click.option("--department", default=None, help="The department of a grid_source file.")
@click.option("--columns", "columns_file", default=None, type=click.Path(path_type=Path),
              help="JSON file mapping target fields to the file's column names.")
@click.option("--force", is_flag=True, help="Load the file again even when it and the options are unchanged.")
def etl_import(path: Path, target: str, source_layer: str | None, crs: str | None, encoding: str | None,
               department: str | None, columns_file: Path | None, force: bool) -> None:
    """Import one vector file (any OGR format: GeoPackage, Shapefile, GeoJSON, FlatGeobuf, ...)
    into a gridwatch layer."""
    from gridwatch.etl.importer import import_file

    summary = import_file(_engine(), path, target=target, crs=crs, encoding=encoding, department=department,
                          columns_file=columns_file, source_layer=source_layer, force=force,
                          settings=get_settings())
    click.echo(summary)


@etl.command("fuse-grids")
@click.option("--force", is_flag=True, help="Fuse even when the sources did not change.")
def etl_fuse_grids(force: bool) -> None:
    """Fuse the departments' grids into one full-element grid layer."""
    import dataclasses

    from gridwatch.etl.fuse_grids import fuse_grid_sources
    from gridwatch.etl.runlog import job_run

    engine = _engine()
    with job_run(engine, "fuse-grids") as counts:
        report = fuse_grid_sources(engine, settings=get_settings(), counts=counts, force=force, progress=True)
    if report is None:
        click.echo("grids are up to date with their sources (use --force to fuse again)")
        return
    for key, value in dataclasses.asdict(report).items():
        click.echo(f"{key:>22}: {value}")


@cli.group()
def grids() -> None:
    """The grid plan: versions, publishing, export and import."""


@grids.command("versions")
def grids_versions() -> None:
    """Saved versions, newest first; the current one (the grid layer) is marked *."""
    from gridwatch.layers.plan import versions

    frame = versions(_engine())
    for r in frame.itertuples():
        towns = ",".join(r.townships) if r.townships is not None else "all"
        click.echo(f"{'*' if r.current else ' '} v{r.version}\t{r.created_at:%Y-%m-%d %H:%M}\t{r.author}\t{towns}\t"
                   f"{' '.join(str(r.note or '').split())[:70]}")
    if frame.empty:
        click.echo("no versions yet (fuse or load grids first)")


@grids.command("publish")
@click.argument("version", type=int)
def grids_publish(version: int) -> None:
    """Make VERSION the grid layer (an earlier one rolls back); coverage follows the changed grids."""
    from gridwatch.etl.plan import publish

    report = publish(_engine(), version, author=_actor(), settings=get_settings())
    click.echo(f"published v{report.version}: {report.added} grid(s) added, {report.removed} removed, "
               f"{report.changed} changed, {report.unchanged} unchanged")


@grids.command("export")
@click.option("--version", "version", type=int, default=None, help="The version (default: the current one).")
@click.option("--format", "fmt", type=click.Choice(["gpkg", "geojson", "shp"]), default="gpkg", show_default=True)
@click.option("--crs", type=click.Choice(["cgcs2000", "wgs84"]), default="cgcs2000", show_default=True)
@click.option("--encoding", type=click.Choice(["utf-8", "gbk"]), default="utf-8", show_default=True,
              help="Text encoding of a Shapefile's attributes (GeoPackage and GeoJSON are always UTF-8).")
@click.option("--township", default=None, help="Only this township's grids.")
@click.option("-o", "--out", "out", type=click.Path(dir_okay=False, path_type=Path), required=True)
def grids_export(version: int | None, fmt: str, crs: str, encoding: str, township: str | None, out: Path) -> None:
    """Write a version's grids to a file GIS software reads."""
    from gridwatch.etl.plan import build_faces, published_version
    from gridwatch.layers.plan_export import export_version

    engine = _engine()
    build_faces(engine, settings=get_settings(), progress=True)  # a fusion's grids have no faces yet
    if version is None:
        with engine.connect() as conn:
            version = published_version(conn)
    if version is None:
        raise GridwatchError("there is no published grid version to export: fuse or load grids first")
    count = export_version(engine, version, out, fmt=fmt, crs=crs, encoding=encoding, township=township)
    click.echo(f"wrote {count} grid(s) of v{version} to {out}")


@grids.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--as", "account", required=True, help="The planner whose drafts the file becomes.")
@click.option("--crs", default=None, help="The file's CRS when it declares none (e.g. EPSG:4490).")
@click.option("--encoding", default=None, help="A Shapefile's text encoding when it has no .cpg (e.g. gbk).")
def grids_import(path: Path, account: str, crs: str | None, encoding: str | None) -> None:
    """Read an edited export back as a planner's drafts (one per township it covers)."""
    import sqlalchemy as sa

    from gridwatch.etl.plan_import import import_drafts

    engine = _engine()
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT id, role FROM account WHERE name = :n"), {"n": account}).fetchone()
    if row is None or row[1] not in ("planner", "admin"):
        raise GridwatchError(f"{account!r} is not a planner's account (see gridwatch users list)")
    report = import_drafts(engine, path, account_id=row[0], encoding=encoding, crs=crs)
    click.echo(f"drafts of {len(report.townships)} township(s) for {account}: {', '.join(report.townships) or '-'}; "
               f"{report.grids} grid(s)")
    for line in report.rejected:
        click.echo(f"  skipped {line}")
    if report.faces_unclaimed:
        click.echo(f"  {report.faces_unclaimed} face(s) lie in no polygon of the file: gaps in the drafts")
    if report.polygons_without_faces:
        click.echo(f"  {len(report.polygons_without_faces)} polygon(s) hold no face: "
                   f"{', '.join(report.polygons_without_faces[:10])}")


# -- evidence of a shift -----------------------------------------------------------
def _window_options(command):
    """``--area``, ``--from`` and ``--to``: a command unit over a time window."""
    command = click.option("--to", "end", default=None,
                           help="The window's end: ISO 8601, a time without a zone in the site's zone (default now).")(command)
    command = click.option("--from", "start", default=None,
                           help="The window's start, like --to (default: a shift, GRIDWATCH_SHIFT_HOURS = 12 h, "
                                "before --to).")(command)
    return click.option("--area", required=True, help="The command unit's code (prefecture, county, township or "
                                                      "station): its ground.")(command)


def _window(area: str, start: str | None, end: str | None):
    from datetime import timedelta

    from gridwatch.layers.evidence import window

    until = _when(end) or datetime.now(ZoneInfo("UTC"))
    since = _when(start) or until - timedelta(hours=get_settings().shift_hours)
    return window(_engine(), area, since, until)


@cli.command("export")
@_window_options
@click.option("--crs", type=click.Choice(["cgcs2000", "wgs84"]), default="cgcs2000", show_default=True)
@click.option("-o", "--out", "out", type=click.Path(path_type=Path), required=True, help="The GeoPackage to write.")
def export_cmd(area: str, start: str | None, end: str | None, crs: str, out: Path) -> None:
    """Write the evidence of an area over a window to a GeoPackage: grids with coverage, border
    segments with status, positions, incidents, and alerts with who acknowledged them."""
    from gridwatch.layers.evidence import export_evidence

    win = _window(area, start, end)
    counts = export_evidence(_engine(), win, out, crs=crs)
    click.echo(f"wrote {out}: " + ", ".join(f"{n:,} {layer.replace('_', ' ')}" for layer, n in counts.items()))


@cli.command("report")
@_window_options
@click.option("--lang", type=click.Choice(["en", "zh"]), default="en", show_default=True)
@click.option("-o", "--out", "out", type=click.Path(path_type=Path), required=True, help="The PDF to write.")
def report_cmd(area: str, start: str | None, end: str | None, lang: str, out: Path) -> None:
    """Write the shift report of an area over a window as PDF: key figures, a map, the worst gaps,
    incidents and their handling, incidents handled per hour, alerts and their acknowledgements."""
    from gridwatch.dashboard.shift_report import write_shift_report

    win = _window(area, start, end)
    size = write_shift_report(_engine(), win, out, settings=get_settings(), lang=lang)
    click.echo(f"wrote {out} ({size / 1024:,.0f} KiB)")


def _feed_command(kind: str) -> None:
    @etl.command(kind)
    @click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
    @click.option("--timezone", "tz", default=None, help="Zone of times written without one (default: the site's).")
    @click.option("--callsign", default=None, help="The unit of a GPX track.")
    @click.option("--columns", "columns_file", default=None, type=click.Path(path_type=Path),
                  help="JSON file mapping target fields to the file's column names.")
    @click.option("--force", is_flag=True, help="Load the files again even when they and the options are unchanged.")
    def command(paths: tuple[Path, ...], tz: str | None, callsign: str | None, columns_file: Path | None,
                force: bool) -> None:
        from gridwatch.etl.importer import load_feed_files

        outcomes = load_feed_files(_engine(), kind, list(paths), timezone_name=tz, callsign=callsign,
                                   columns_file=columns_file, force=force, settings=get_settings())
        for outcome in outcomes:
            click.echo(outcome.describe())
        _fail_on_refusals(outcomes, f"etl {kind}")

    formats = "CSV, GPX, GeoJSON" if kind == "positions" else "CSV"
    command.__doc__ = f"Load {kind} files ({formats}): filtered, fused, idempotent; a changed file reloads."


_feed_command("positions")
_feed_command("incidents")


@etl.command("coverage")
@click.option("--as-of", default=None, help="Judge coverage at this time (default now).")
def etl_coverage(as_of: str | None) -> None:
    """Rebuild grid, border-segment and H3 coverage and gaps."""
    from gridwatch.etl.coverage import derive_coverage
    from gridwatch.etl.runlog import job_run

    engine = _engine()
    with job_run(engine, "coverage"):
        derive_coverage(engine, settings=get_settings(), as_of=_when(as_of))
    click.echo("coverage rebuilt")


@etl.command("defence")
def etl_defence() -> None:
    """Rebuild the state of the three defence lines and the leak routes."""
    from gridwatch.etl.defence import derive_defence
    from gridwatch.etl.runlog import job_run

    engine = _engine()
    with job_run(engine, "defence"):
        derive_defence(engine, settings=get_settings())
    click.echo("defence lines rebuilt")


# -- live positions --------------------------------------------------------------
@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--http-port", default=5055, show_default=True, type=int,
              help="OsmAnd and JSON batch port (HTTPS with --tls-cert and --tls-key).")
@click.option("--cot-port", default=8087, show_default=True, type=int,
              help="Plain Cursor-on-Target TCP port (device token in the first event); 0 switches it off.")
@click.option("--cot-tls-port", default=8089, show_default=True, type=int,
              help="Cursor-on-Target over TLS with client certificates (gridwatch devices cert); 0 switches it off.")
@click.option("--server-name", "server_names", multiple=True,
              help="A name or address TAK clients reach this service by, for its TLS certificate (repeat it; "
                   "localhost, this machine's names and --host are always in it).")
@_tls_options
@click.option("--rate", default=20.0, show_default=True, type=float, help="Fixes per second per device.")
@click.option("--burst", default=100.0, show_default=True, type=float, help="Burst allowed per device.")
def ingest(host: str, http_port: int, cot_port: int, cot_tls_port: int, server_names: tuple[str, ...],
           tls_cert: Path | None, tls_key: Path | None, rate: float, burst: float) -> None:
    """Receive live positions (OsmAnd, CoT, JSON) into the spool and the database; SIGTERM stops.

    The CoT TLS port takes the client certificates that `gridwatch devices cert` issues from the
    installation's CA (<home>/pki, made at the first start if there is none) and serves a certificate
    of that CA, which the devices trust through their data package.
    """
    import logging

    from gridwatch.errors import DatabaseError
    from gridwatch.etl.database import ensure_database
    from gridwatch.etl.ingest.server import IngestOptions, run_ingest

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("gridwatch.etl.ingest").setLevel(logging.INFO)
    settings = get_settings()
    tls_cert, tls_key = _tls_pair(tls_cert, tls_key)
    if settings.tls_server_names or server_names:
        settings = settings.model_copy(update={"tls_server_names": [*settings.tls_server_names, *server_names]})
    try:
        ensure_database(settings)
    except DatabaseError as exc:
        click.echo(f"gridwatch: warning: {exc}; fixes are kept in the spool until the database answers", err=True)
    run_ingest(settings, IngestOptions(host=host, http_port=http_port, cot_port=cot_port, cot_tls_port=cot_tls_port,
                                       tls_cert=tls_cert, tls_key=tls_key, rate=rate, burst=burst))


@cli.group()
def devices() -> None:
    """Devices that report live positions: their tokens and certificates. A device token is for the
    ingest service alone; it never signs a person in to the dashboard."""


def _device_db():
    """A connection to the migrated database (commits when its block ends without an error)."""
    import psycopg

    from gridwatch.etl.database import database_url, ensure_database

    settings = get_settings()
    ensure_database(settings)
    return psycopg.connect(database_url(settings))


def _new_tokens(callsigns: list[str], *, create_units: bool = False) -> dict[str, str]:
    from gridwatch.etl.accounts import audit
    from gridwatch.etl.ingest.devices import add_devices

    with _device_db() as conn:
        tokens = add_devices(conn, callsigns, create_units=create_units)
        audit(conn, _actor(), "device_tokens_issued", devices=sorted(tokens))
        return tokens


@devices.command("add")
@click.argument("callsigns", nargs=-1, required=True)
def devices_add(callsigns: tuple[str, ...]) -> None:
    """Give units a new device token (replacing an old one) and print it; it is shown only once."""
    tokens = _new_tokens(list(callsigns))
    if len(tokens) == 1:
        click.echo(next(iter(tokens.values())))
    else:
        for callsign, token in tokens.items():
            click.echo(f"{callsign}\t{token}")


@devices.command("cert")
@click.argument("callsign")
@click.option("--out", "out_dir", default=".", show_default=True, type=click.Path(path_type=Path, file_okay=False),
              help="Folder to write to.")
@click.option("--format", "fmt", type=click.Choice(["zip", "p12"]), default="zip", show_default=True,
              help="zip: a TAK data package (ATAK, WinTAK: import it); p12: the device's .p12 and the CA truststore .p12.")
@click.option("--host", default=None,
              help="The name or address devices reach the ingest service by (default this machine's name).")
@click.option("--port", default=8089, show_default=True, type=int, help="The ingest service's CoT TLS port.")
def devices_cert(callsign: str, out_dir: Path, fmt: str, host: str | None, port: int) -> None:
    """Issue a unit's device a client certificate from the installation's CA (made on first use), as
    its one current certificate (an older one no longer connects), and write it password-protected.

    The password is printed once; the data package holds it too, so keep the package as secret as
    a password. The service takes the certificate within seconds, without a restart.
    """
    import secrets
    import socket

    from gridwatch.etl.accounts import audit
    from gridwatch.etl.ingest.devices import set_certificate
    from gridwatch.etl.ingest.pki import Authority
    from gridwatch.etl.ingest.takpackage import TRUSTSTORE_NAME, data_package, device_p12, file_stem, truststore_p12
    from gridwatch.tls import write_secret

    settings = get_settings()
    host = host or socket.getfqdn()
    with _device_db() as conn:
        authority = Authority.open(settings.pki_dir)
        issued = authority.issue_device(callsign, days=settings.device_cert_days)
        set_certificate(conn, callsign, issued.fingerprint, issued.cert.not_valid_after_utc)
        audit(conn, _actor(), "device_certificate_issued", device=callsign, fingerprint=issued.fingerprint)
        password = secrets.token_urlsafe(15)
        out_dir.mkdir(parents=True, exist_ok=True)
        stem = file_stem(callsign)
        if fmt == "zip":
            written = [write_secret(out_dir / f"{stem}-gridwatch.zip", data_package(
                issued, authority.cert, callsign, host=host, port=port, password=password))]
        else:
            written = [write_secret(out_dir / f"{stem}.p12", device_p12(issued, authority.cert, callsign, password)),
                       write_secret(out_dir / TRUSTSTORE_NAME, truststore_p12(authority.cert, password))]
    for path in written:
        click.echo(f"wrote {path}")
    click.echo(f"certificate {issued.fingerprint} for {callsign}, valid until {issued.cert.not_valid_after_utc:%Y-%m-%d}"
               f", connects to {host}:{port} over TLS")
    click.echo(f"password (shown only now): {password}")


@devices.command("revoke")
@click.argument("callsigns", nargs=-1, required=True)
def devices_revoke(callsigns: tuple[str, ...]) -> None:
    """Withdraw devices' tokens and certificates: the ingest service refuses them within 10 s and closes
    their open connections. `devices add` or `devices cert` gives a device new credentials."""
    from gridwatch.etl.accounts import audit
    from gridwatch.etl.ingest.devices import revoke_devices

    with _device_db() as conn:
        revoke_devices(conn, list(callsigns))
        audit(conn, _actor(), "devices_revoked", devices=sorted(set(callsigns)))
    click.echo(f"revoked {', '.join(dict.fromkeys(callsigns))}")


@devices.command("list")
def devices_list() -> None:
    """Every device: when made, whether it has a token, its certificate and expiry, and revocation."""
    from gridwatch.etl.ingest.devices import list_devices

    with _device_db() as conn:
        records = list_devices(conn)
    zone = ZoneInfo(get_settings().timezone)

    def when(moment: datetime | None, form: str = "%Y-%m-%d %H:%M") -> str:
        return moment.astimezone(zone).strftime(form) if moment else "-"

    rows = [("callsign", "created", "token", "certificate (SHA-256)", "expires", "revoked")]
    rows += [(r.callsign, when(r.created_at), "yes" if r.has_token else "no",
              r.cert_fingerprint or "-", when(r.cert_expires_at, "%Y-%m-%d"),
              when(r.revoked_at)) for r in records]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(value.ljust(width) for value, width in zip(row, widths)).rstrip())


@cli.command()
@click.option("--protocol", type=click.Choice(["osmand", "cot", "json"]), default="osmand", show_default=True)
@click.option("--url", default=None, help="Service URL (default http://127.0.0.1:5055, tcp://127.0.0.1:8087 for cot).")
@click.option("--speed", default="1x", show_default=True, help="Replay speed factor, e.g. 10x.")
@click.option("--duration", default=None, type=float, help="Stop after this many seconds (default: end of data).")
@click.option("--input", "input_dir", default=None, type=click.Path(path_type=Path),
              help="A sample folder (manifest.json) to replay; without it, invented tracks.")
@click.option("--units", default=20, show_default=True, type=int, help="Invented units (without --input).")
@click.option("--bbox", default="100.0,22.0,100.2,22.2", show_default=True, help="Invented tracks' lon/lat box.")
@click.option("--provision", is_flag=True, help="Create device tokens in the database (and invented units).")
@click.option("--tokens", "tokens_file", default=None, type=click.Path(path_type=Path),
              help="JSON file callsign -> token: read, or written with --provision.")
def simulate(protocol: str, url: str | None, speed: str, duration: float | None, input_dir: Path | None,
             units: int, bbox: str, provision: bool, tokens_file: Path | None) -> None:
    """Replay positions against the ingest service as phones, TAK clients or a gateway would."""
    import asyncio
    import json

    from gridwatch.data.simulator import invent_tracks, load_tracks, parse_speed
    from gridwatch.data.simulator import simulate as run

    factor = parse_speed(speed)
    if input_dir is not None:
        tracks = load_tracks(input_dir)
    else:
        box = tuple(float(v) for v in bbox.split(","))
        if len(box) != 4:
            raise click.BadParameter(f"bbox {bbox!r} must be minlon,minlat,maxlon,maxlat")
        tracks = invent_tracks(units=units, bbox=box, span_s=max(duration or 3600.0, 60.0) * factor)
    callsigns = sorted(set(tracks["callsign"]))
    if provision:
        tokens = _new_tokens(callsigns, create_units=input_dir is None)
        if tokens_file is not None:
            fd = os.open(tokens_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                json.dump(tokens, handle)
    elif tokens_file is not None:
        tokens = json.loads(tokens_file.read_text())
    else:
        raise click.UsageError("give --provision (new tokens) or --tokens FILE")
    url = url or ("tcp://127.0.0.1:8087" if protocol == "cot" else "http://127.0.0.1:5055")
    click.echo(f"simulating {len(callsigns)} units over {protocol} to {url} at {factor:g}x ...")
    report = asyncio.run(run(tracks, protocol=protocol, url=url, tokens=tokens, speed=factor, duration_s=duration))
    click.echo(str(report))


# -- accounts and kiosk links -------------------------------------------------
def _accounts_engine():
    """The database engine, the schema migrated (accounts are kept in the database)."""
    from gridwatch.etl.database import database_engine, ensure_database

    settings = get_settings()
    ensure_database(settings)
    return database_engine(settings)


def _actor() -> str:
    """Who runs a command, as the audit log names them."""
    import getpass

    return f"cli:{getpass.getuser()}"


def _password(generate: bool) -> str:
    """A new password: generated (and printed once), typed twice at a terminal, or the first line of stdin."""
    import secrets

    if generate:
        password = secrets.token_urlsafe(15)
        click.echo(f"password: {password}")
        return password
    if sys.stdin.isatty():
        return click.prompt("password", hide_input=True, confirmation_prompt=True)
    return sys.stdin.readline().rstrip("\r\n")


@cli.group()
def users() -> None:
    """Accounts of people: their role (viewer, dispatcher, planner, admin) and command unit."""


_ROLE = click.Choice(["viewer", "dispatcher", "planner", "admin"])
_GENERATE = click.option("--generate", is_flag=True, help="Make a random password and print it once.")


@users.command("add")
@click.argument("name")
@click.option("--role", type=_ROLE, required=True, help="What the account may do.")
@click.option("--unit", default=None, help="Code of the command unit it sees (default: the top one).")
@_GENERATE
def users_add(name: str, role: str, unit: str | None, generate: bool) -> None:
    """Add an account; the password is typed twice, read from stdin, or generated."""
    from gridwatch.etl.accounts import add_account

    password = _password(generate)
    with _accounts_engine().begin() as conn:
        account = add_account(conn, name, role, password, unit=unit, actor=_actor())
    click.echo(f"added {account.name}: {account.role} of {account.unit}")


@users.command("remove")
@click.argument("name")
def users_remove(name: str) -> None:
    """Remove an account; its sessions end within seconds."""
    from gridwatch.etl.accounts import remove_account

    with _accounts_engine().begin() as conn:
        remove_account(conn, name, actor=_actor())
    click.echo(f"removed {name}")


@users.command("passwd")
@click.argument("name")
@_GENERATE
def users_passwd(name: str, generate: bool) -> None:
    """Set an account's password; its sessions signed in before end."""
    from gridwatch.etl.accounts import set_password

    password = _password(generate)
    with _accounts_engine().begin() as conn:
        set_password(conn, name, password, actor=_actor())
    click.echo(f"password of {name} set")


@users.command("role")
@click.argument("name")
@click.argument("role", type=_ROLE)
@click.option("--unit", default=None, help="Also move the account to this command unit.")
def users_role(name: str, role: str, unit: str | None) -> None:
    """Give an account another role (and command unit)."""
    from gridwatch.etl.accounts import set_role

    with _accounts_engine().begin() as conn:
        account = set_role(conn, name, role, unit=unit, actor=_actor())
    click.echo(f"{account.name}: {account.role} of {account.unit}")


@users.command("list")
def users_list() -> None:
    """Every account: name, role, command unit, when its password was set."""
    from gridwatch.etl.accounts import accounts

    with _accounts_engine().connect() as conn:
        rows = accounts(conn)
    for account in rows:
        click.echo(f"{account.name}\t{account.role}\t{account.unit}\t{account.password_changed_at:%Y-%m-%d %H:%M}")
    if not rows:
        click.echo("no accounts (add one: gridwatch users add NAME --role admin)")


@cli.group()
def kiosk() -> None:
    """Kiosk links: walls that show one command unit with nobody signed in at the keyboard."""


@kiosk.command("add")
@click.argument("name")
@click.option("--unit", default=None, help="Code of the command unit the wall shows (default: the top one).")
@click.option("--base-url", default=None, help="The dashboard's address as the wall reaches it (default: host:port).")
def kiosk_add(name: str, unit: str | None, base_url: str | None) -> None:
    """Make a kiosk link for a wall and print it (shown only now: keep it like a password)."""
    from gridwatch.etl.accounts import add_kiosk

    settings = get_settings()
    with _accounts_engine().begin() as conn:
        token = add_kiosk(conn, name, unit=unit, actor=_actor())
    click.echo(f"{(base_url or f'http://{settings.host}:{settings.port}').rstrip('/')}/kiosk/{token}")


@kiosk.command("list")
def kiosk_list() -> None:
    """Every kiosk link: name, command unit, made, revoked."""
    from gridwatch.etl.accounts import kiosks

    with _accounts_engine().connect() as conn:
        rows = kiosks(conn)
    for k in rows:
        revoked = f"revoked {k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "in use"
        click.echo(f"{k.name}\t{k.unit}\tmade {k.created_at:%Y-%m-%d %H:%M}\t{revoked}")
    if not rows:
        click.echo("no kiosk links (add one: gridwatch kiosk add NAME)")


@kiosk.command("revoke")
@click.argument("name")
def kiosk_revoke(name: str) -> None:
    """Revoke a kiosk link: its wall is signed out within seconds."""
    from gridwatch.etl.accounts import revoke_kiosk

    with _accounts_engine().begin() as conn:
        revoke_kiosk(conn, name, actor=_actor())
    click.echo(f"revoked {name}")


def _os_error(exc: OSError) -> str:
    """An operating-system failure in one line that says what to do."""
    import errno

    where = f": {exc.filename}" if exc.filename else ""
    if exc.errno == errno.ENOSPC:
        return f"the disk is full{where}: free space and run the command again (what was loaded before is kept)"
    if isinstance(exc, FileNotFoundError):
        return f"a file is gone{where} (moved or deleted while the command ran?)"
    return " ".join(str(exc).split())


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning expected failures into one line (a fatal signal, a crash in
    compiled code, leaves every thread's Python stack instead, for its diagnosis)."""
    faulthandler.enable()
    try:
        cli.main(args=argv, prog_name="gridwatch", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("gridwatch: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        click.echo(f"gridwatch: error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except (GridwatchError, ValueError) as exc:
        click.echo("gridwatch: error: " + " ".join(str(exc).split()), err=True)
        sys.exit(1)
    except OSError as exc:
        click.echo(f"gridwatch: error: {_os_error(exc)}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("gridwatch: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # a bug, unless the database went away: still one line, the traceback on request
        from gridwatch.etl.runner import database_lost, disk_full

        if disk_full(exc) or database_lost(exc):
            first = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__])[0]
            what, fix = (("the database's disk is full", "free space on it") if disk_full(exc) else
                         ("lost the connection to the database", "start it (gridwatch db start)"))
            click.echo(f"gridwatch: error: {what} ({first}): what was loaded before is kept; {fix} and run the "
                       "command again", err=True)
            sys.exit(1)
        if os.environ.get("GRIDWATCH_DEBUG"):
            raise
        message = " ".join(str(exc).split())[:500]
        click.echo(f"gridwatch: internal error: {type(exc).__name__}: {message} "
                   "(run again with GRIDWATCH_DEBUG=1 for the traceback)", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
