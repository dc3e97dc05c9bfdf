"""The ``gridwatch`` command. Expected failures print one line and exit 1."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from gridwatch.errors import GridwatchError
from gridwatch.settings import get_settings

__all__ = ["main", "cli"]


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
    from etl.database import database_url, ensure_database
    from etl.server import EmbeddedServer

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
    from etl.server import EmbeddedServer

    stopped = EmbeddedServer(get_settings()).stop()
    click.echo("stopped" if stopped else "not running")


@db.command("status")
def db_status() -> None:
    """Say whether the database runs, and where."""
    from etl.database import check_postgis, database_url, engine_for
    from etl.server import EmbeddedServer

    settings = get_settings()
    if settings.database_url:
        version = check_postgis(engine_for(settings.database_url))
        click.echo(f"external database up, PostGIS {version}")
        return
    server = EmbeddedServer(settings)
    if server.is_running():
        click.echo(f"running (pid {server.pid()}) at {database_url(settings)}, data in {server.datadir}")
    else:
        click.echo(f"stopped; data in {server.datadir}")
        sys.exit(3)


@db.command("url")
def db_url() -> None:
    """Print the database URL in use."""
    from etl.database import database_url

    click.echo(database_url(get_settings()))


@db.command("upgrade")
def db_upgrade() -> None:
    """Migrate the schema to the newest revision."""
    from etl.database import ensure_database

    ensure_database(get_settings())
    click.echo("schema up to date")


# -- dashboard -----------------------------------------------------------------
@cli.command()
@click.option("--host", default=None, help="Interface to listen on (default 127.0.0.1).")
@click.option("--port", default=None, type=int, help="Port (default 8050).")
def serve(host: str | None, port: int | None) -> None:
    """Serve the dashboard against the configured database."""
    from dashboard.app import run

    settings = get_settings()
    run(host=host or settings.host, port=port or settings.port)


@cli.command()
@click.option("--seed", default=1, type=int, show_default=True, help="Sample region seed.")
@click.option("--scale", default="prefecture", show_default=True, help="small, prefecture or province.")
@click.option("--no-serve", is_flag=True, help="Load the demo data, then exit.")
def demo(seed: int, scale: str, no_serve: bool) -> None:
    """Start the database, generate and load the sample region, serve the dashboard."""
    from dashboard.app import run
    from etl.demo import prepare_demo

    settings = get_settings()
    prepare_demo(settings, seed=seed, scale=scale)
    if not no_serve:
        click.echo(f"dashboard on http://{settings.host}:{settings.port}/  (Ctrl-C stops)")
        run(host=settings.host, port=settings.port)


@cli.command()
@click.option("--seed", default=1, type=int, show_default=True, help="An integer: same seed, same files.")
@click.option("--scale", default="prefecture", show_default=True, help="small, prefecture or province.")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Output folder.")
def sample(seed: int, scale: str, out_dir: Path) -> None:
    """Write the fictional sample region and its manifest."""
    from data import generate_sample

    manifest = generate_sample(out_dir, seed=seed, scale=scale, progress=True)
    click.echo(f"wrote {manifest}")


@cli.command()
@click.argument("name")
@click.option("--scale", default="prefecture", show_default=True, help="Sample scale to measure on.")
def bench(name: str, scale: str) -> None:
    """Run a benchmark (sample, etl, tiles, ...) and print its figures."""
    from gridwatch.bench import format_figures, run_benchmark

    click.echo(format_figures(run_benchmark(name, get_settings(), scale=scale)))


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning expected failures into one line."""
    try:
        cli.main(args=argv, prog_name="gridwatch", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("gridwatch: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        click.echo(f"gridwatch: error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except (GridwatchError, ValueError, OSError) as exc:
        click.echo("gridwatch: error: " + " ".join(str(exc).split()), err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("gridwatch: interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
