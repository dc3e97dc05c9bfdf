"""What callbacks and routes share: the engine and settings of the running app, and the last
known answer of each read, which the pages keep showing while the database is away."""
from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Generic, TypeVar

import flask
import pandas as pd
import sqlalchemy as sa

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
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, tuple[object, datetime, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def read(self, key: Hashable, fetch: Callable[[], T]) -> Known[T]:
        """The answer of ``fetch`` (remembered), else the last one remembered under ``key``."""
        try:
            value = fetch()
        except DB_ERRORS:
            with self._lock:
                if key not in self._items:
                    raise
                self._items.move_to_end(key)
                kept, at, _ = self._items[key]
            return Known(kept, at, fresh=False)  # type: ignore[arg-type]
        at = datetime.now(timezone.utc)
        size = _size(value)
        with self._lock:
            if key in self._items:
                self._bytes -= self._items.pop(key)[2]
            self._items[key] = (value, at, size)
            self._bytes += size
            while self._bytes > self.max_bytes and len(self._items) > 1:
                self._bytes -= self._items.popitem(last=False)[1][2]
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
    """The database engine and settings of one dashboard app, and what it last read."""

    engine: sa.Engine
    settings: Settings
    known: LastKnown = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "known", LastKnown(int(self.settings.last_known_mb * 2**20)))


def context() -> WallContext:
    """The context of the app serving the current request."""
    return flask.current_app.extensions["gridwatch"]


def milliseconds(seconds: float) -> int:
    """A refresh period from the settings as a ``dcc.Interval`` interval."""
    return max(1, round(seconds * 1000))
