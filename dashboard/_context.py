"""What callbacks and routes share: the engine and settings of the running app, and the last
known answer of each read, which the pages keep showing while the database is away."""
from __future__ import annotations

import sys
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Generic, TypeVar

import flask
import pandas as pd
import sqlalchemy as sa

from gridwatch.layers.lru import BytesLru
from gridwatch.layers.tiles import TileCache
from gridwatch.settings import Settings

__all__ = ["WallContext", "Known", "LastKnown", "context", "milliseconds", "DB_ERRORS"]

# A database that is down, restarting or overloaded: shown as a banner, never a crash.
DB_ERRORS = (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError)

T = TypeVar("T")


@dataclass(frozen=True)
class Known(Generic[T]):
    """An answer and when it was read; ``fresh`` is False when the database was away just now."""

    value: T
    at: datetime
    fresh: bool


class LastKnown:
    """The last good answer of each read, kept up to ``max_bytes`` (least recently used go first).

    ``read(key, fetch)`` runs ``fetch``; when the database is away it answers the last value
    read under ``key`` instead, marked not fresh, and raises only when it never had one.
    """

    def __init__(self, max_bytes: int) -> None:
        self._items: BytesLru[tuple[object, datetime]] = BytesLru(max_bytes)

    def read(self, key: Hashable, fetch: Callable[[], T]) -> Known[T]:
        """The answer of ``fetch`` (remembered), else the last one remembered under ``key``."""
        try:
            value = fetch()
        except DB_ERRORS:
            kept = self._items.get(key)
            if kept is None:
                raise
            return Known(kept[0], kept[1], fresh=False)  # type: ignore[arg-type]
        at = datetime.now(timezone.utc)
        self._items.put(key, (value, at), _size(value))
        return Known(value, at, fresh=True)


def _size(value: object) -> int:
    """Roughly how many bytes ``value`` holds."""
    if isinstance(value, (bytes, bytearray)):
        return len(value)
    if isinstance(value, pd.DataFrame):
        return int(value.memory_usage(deep=True).sum())
    if isinstance(value, tuple):
        return sum(_size(v) for v in value)
    return sys.getsizeof(value)


@dataclass(frozen=True)
class WallContext:
    """The database engine and settings of one dashboard app, what it last read and the tiles it made."""

    engine: sa.Engine
    settings: Settings
    known: LastKnown = field(init=False)
    tiles: TileCache = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "known", LastKnown(int(self.settings.last_known_mb * 2**20)))
        object.__setattr__(self, "tiles", TileCache(int(self.settings.tile_cache_mb * 2**20)))


def context() -> WallContext:
    """The context of the app serving the current request."""
    return flask.current_app.extensions["gridwatch"]


def milliseconds(seconds: float) -> int:
    """A refresh period from the settings as a ``dcc.Interval`` interval."""
    return max(1, round(seconds * 1000))
