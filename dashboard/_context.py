"""What callbacks and routes share: the engine and settings of the running app."""
from __future__ import annotations

from dataclasses import dataclass

import flask
import sqlalchemy as sa

from gridwatch.settings import Settings

__all__ = ["WallContext", "context", "milliseconds", "DB_ERRORS"]

# A database that is down, restarting or overloaded: shown as a banner, never a crash.
DB_ERRORS = (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError)


@dataclass(frozen=True)
class WallContext:
    """The database engine and settings of one dashboard app."""

    engine: sa.Engine
    settings: Settings


def context() -> WallContext:
    """The context of the app serving the current request."""
    return flask.current_app.extensions["gridwatch"]


def milliseconds(seconds: float) -> int:
    """A refresh period from the settings as a ``dcc.Interval`` interval."""
    return max(1, round(seconds * 1000))
