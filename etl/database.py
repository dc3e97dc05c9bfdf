"""Which database gridwatch uses, and getting it ready (reachable, PostGIS, schema)."""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.pool import ConnectionPoolEntry, PoolResetState

from gridwatch.errors import DatabaseError
from gridwatch.etl.server import EmbeddedServer, database_url  # beside the server: `db url` loads no driver
from gridwatch.settings import Settings, get_settings

__all__ = ["database_url", "database_engine", "engine_for", "ensure_database", "upgrade_schema", "check_postgis", "SCHEMA_LOCK",
           "scratch_database", "pg_connection", "pg_transaction"]

MIGRATIONS = Path(__file__).with_name("migrations")
# The advisory lock two commands starting at once take in turn to enable PostGIS and migrate the schema.
SCHEMA_LOCK = 0x67726964


def _sqlalchemy_url(url: str) -> sa.URL:
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError:
        raise DatabaseError(
            f"could not parse the database URL {url!r}: expected "
            "postgresql://USER:PASSWORD@HOST:PORT/DATABASE (check GRIDWATCH_DATABASE_URL)"
        ) from None
    if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def engine_for(url: str, **kwargs) -> Engine:
    """A SQLAlchemy engine (psycopg 3) for a libpq URL.

    Connections are checked before use (those a restart cut are replaced) and rolled back when
    returned, unless the server went away under them: then they are dropped quietly, the error
    that reported it already on its way to the caller.
    """
    engine = sa.create_engine(_sqlalchemy_url(url), pool_pre_ping=True, pool_reset_on_return=None, **kwargs)
    sa.event.listen(engine, "reset", _roll_back_on_return)
    return engine


def _roll_back_on_return(driver: psycopg.Connection, record: ConnectionPoolEntry, state: PoolResetState) -> None:
    """The pool's reset of a returned connection: a rollback, or, if its server is gone, discarding it."""
    if state.transaction_was_reset or state.terminate_only:
        return
    try:
        driver.rollback()
    except psycopg.OperationalError as exc:
        if not (driver.broken or driver.closed):
            raise
        record.invalidate(exc)


@contextmanager
def pg_connection(engine: Engine) -> Iterator[psycopg.Connection]:
    """The psycopg connection under one of ``engine``'s (for COPY, binary reads and the like)."""
    with engine.connect() as conn:
        yield conn.connection.driver_connection


@contextmanager
def pg_transaction(engine: Engine) -> Iterator[psycopg.Connection]:
    """:func:`pg_connection` inside one transaction: committed at exit, rolled back on error."""
    with pg_connection(engine) as conn, conn.transaction():
        yield conn


def database_engine(settings: Settings | None = None, **kwargs) -> Engine:
    """An engine on the database in use that finds it again after a restart, with no restart here.

    For ``GRIDWATCH_DATABASE_URL``, that server. For the embedded cluster, every new connection
    reads the cluster's current address (``db.json``), so a cluster started again on another
    port is found too. Pooled connections are checked before use, so those a restart cut are
    replaced.
    """
    settings = settings or get_settings()
    engine = engine_for(database_url(settings), **kwargs)
    if not settings.database_url:
        server = EmbeddedServer(settings)

        @sa.event.listens_for(engine, "do_connect")
        def _current_address(dialect, record, cargs, cparams) -> None:
            url = make_url(server.url())
            cparams.update(host=url.host, port=url.port, password=url.password, dbname=url.database)

    return engine


def _describe(url: str) -> str:
    parsed = make_url(url)
    return f"{parsed.host or 'localhost'}:{parsed.port or 5432}/{parsed.database}"


def check_postgis(engine: Engine) -> str:
    """Connect, make sure PostGIS is enabled, and return its version."""
    url = engine.url.render_as_string(hide_password=False)
    try:
        with engine.begin() as conn:
            available = conn.execute(
                sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'postgis'")
            ).scalar()
            if not available:
                raise DatabaseError(
                    f"the database at {_describe(url)} has no PostGIS: install it on that "
                    "server (e.g. apt-get install postgresql-NN-postgis-3)"
                )
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK})
            conn.execute(sa.text("CREATE EXTENSION IF NOT EXISTS postgis"))
            return str(conn.execute(sa.text("SELECT postgis_lib_version()")).scalar())
    except sa.exc.OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise DatabaseError(
            f"cannot connect to the database at {_describe(url)} ({reason}): "
            "check GRIDWATCH_DATABASE_URL, or unset it to use the embedded database"
        ) from None
    except sa.exc.ProgrammingError as exc:
        raise DatabaseError(
            f"cannot enable PostGIS in {_describe(url)} ({str(exc.orig).strip().splitlines()[0]}): "
            "run CREATE EXTENSION postgis there as a superuser"
        ) from None


def upgrade_schema(url: str) -> None:
    """Bring the schema to the newest Alembic revision."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["url"] = url
    command.upgrade(config, "head")


def ensure_database(settings: Settings | None = None, *, upgrade: bool = True) -> Engine:
    """Start the embedded server if it is the one in use, check PostGIS, migrate.

    Returns an engine on the ready database.
    """
    settings = settings or get_settings()
    if not settings.database_url:
        EmbeddedServer(settings).start()
    url = database_url(settings)
    engine = engine_for(url)
    check_postgis(engine)
    if upgrade:
        upgrade_schema(url)
    return engine


@contextmanager
def scratch_database(settings: Settings | None = None, *, prefix: str = "gridwatch_scratch") -> Iterator[str]:
    """A fresh, migrated database on the server in use (embedded or external), dropped afterwards.

    Yields its URL. Benchmarks and tests use it so they never touch the real data.
    """
    settings = settings or get_settings()
    if not settings.database_url:
        EmbeddedServer(settings).start()
    server = make_url(database_url(settings))
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = server.set(database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = server.set(database=name).render_as_string(hide_password=False)
    try:
        engine = engine_for(url)
        check_postgis(engine)
        engine.dispose()
        upgrade_schema(url)
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
