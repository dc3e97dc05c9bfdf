"""Click commands of the live ingest: ``gridwatch ingest``, ``gridwatch devices add``, ``gridwatch simulate``.

Attach them to the main CLI with ``cli.add_command(ingest)``,
``cli.add_command(devices)`` and ``cli.add_command(simulate)``.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path

import click

from gridwatch.errors import DatabaseError
from gridwatch.settings import get_settings

__all__ = ["ingest", "devices", "simulate"]


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--http-port", default=5055, show_default=True, type=int, help="OsmAnd and JSON batch port.")
@click.option("--cot-port", default=8087, show_default=True, type=int, help="Cursor-on-Target TCP port.")
@click.option("--rate", default=20.0, show_default=True, type=float, help="Fixes per second per device.")
@click.option("--burst", default=100.0, show_default=True, type=float, help="Burst allowed per device.")
def ingest(host: str, http_port: int, cot_port: int, rate: float, burst: float) -> None:
    """Receive live positions (OsmAnd, CoT, JSON) into the spool and the database; SIGTERM stops."""
    from etl.database import ensure_database
    from etl.ingest.server import IngestOptions, run_ingest

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("etl.ingest").setLevel(logging.INFO)
    settings = get_settings()
    try:
        ensure_database(settings)
    except DatabaseError as exc:
        click.echo(f"gridwatch: warning: {exc}; fixes are kept in the spool until the database answers", err=True)
    options = IngestOptions(host=host, http_port=http_port, cot_port=cot_port, rate=rate, burst=burst)
    run_ingest(settings, options)


@click.group()
def devices() -> None:
    """Devices that report live positions, and their tokens."""


@devices.command("add")
@click.argument("callsigns", nargs=-1, required=True)
def devices_add(callsigns: tuple[str, ...]) -> None:
    """Give units a new device token (replacing an old one) and print it; it is shown only once."""
    import psycopg

    from etl.database import database_url, ensure_database
    from etl.ingest.devices import add_devices

    settings = get_settings()
    ensure_database(settings)
    with psycopg.connect(database_url(settings)) as conn:
        tokens = add_devices(conn, list(callsigns))
    if len(tokens) == 1:
        click.echo(next(iter(tokens.values())))
    else:
        for callsign, token in tokens.items():
            click.echo(f"{callsign}\t{token}")


@click.command()
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
    from data.simulator import invent_tracks, load_tracks, parse_speed, simulate as run
    from data.simulator import provision as make_tokens

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
        from etl.database import database_url, ensure_database

        settings = get_settings()
        ensure_database(settings)
        tokens = make_tokens(database_url(settings), callsigns, create_units=input_dir is None)
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
