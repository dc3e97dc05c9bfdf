"""Shared fixtures: a real PostGIS started by gridwatch's own code.

The session starts the embedded cluster (or uses ``GRIDWATCH_DATABASE_URL`` as
the server), creates a database for this test run, migrates it, and drops it
at the end.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from gridwatch.etl.database import database_url, engine_for, scratch_database
from gridwatch.etl.server import EmbeddedServer
from gridwatch.settings import Settings

from _refdata import empty_tables

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"

@pytest.fixture(scope="session")
def server_url() -> str:
    """A libpq URL of a PostGIS server: the embedded one, started here."""
    settings = Settings(home=ROOT / ".gridwatch")
    if settings.database_url:
        return settings.database_url
    EmbeddedServer(settings).start()
    return database_url(settings)


@pytest.fixture(scope="session")
def db_url(server_url: str) -> Iterator[str]:
    """A fresh, migrated database for this test run, dropped afterwards."""
    settings = Settings(home=ROOT / ".gridwatch", database_url=server_url)
    with scratch_database(settings, prefix="gridwatch_test") as url:
        yield url


@pytest.fixture(scope="session")
def engine(db_url: str) -> Iterator[sa.Engine]:
    eng = engine_for(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def clean_db(engine: sa.Engine) -> sa.Engine:
    """The test database with every data table emptied."""
    empty_tables(engine)
    return engine


@pytest.fixture
def emptier() -> Callable[[sa.Engine], None]:
    """A function that empties every data table, for tests that reset mid-way."""
    return empty_tables


@pytest.fixture
def cli_env(db_url: str, tmp_path: Path) -> dict[str, str]:
    """Environment for running the ``gridwatch`` command against the test database."""
    return {**os.environ, "GRIDWATCH_DATABASE_URL": db_url, "GRIDWATCH_HOME": str(tmp_path / "home")}


@pytest.fixture(scope="session")
def small_sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small generated sample folder (manifest and files), made once; tests copy it before changing it."""
    from gridwatch.data import fixed_end, generate_sample

    folder = tmp_path_factory.mktemp("sample")
    generate_sample(folder, seed=7, scale="small", end=fixed_end(7))
    return folder


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where tests leave screenshots and reports for a person to look at."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
