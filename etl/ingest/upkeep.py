"""Keeping the live situation current while fixes stream in.

Each written batch moves coverage forward at once (the writer calls
:func:`gridwatch.etl.coverage.refresh_coverage_for`). Between batches, time itself
changes the picture: places turn due and overdue, units fall silent, alerts
are raised and cleared. :class:`Upkeep` does that on a clock, in its own
thread of the ingest service, and rebuilds the coverage tables in full now and
then (visit counts and dwell over the 1 h / 4 h / 24 h windows).
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone

from gridwatch.etl.alerts import refresh_alerts
from gridwatch.etl.coverage import age_coverage, derive_coverage
from gridwatch.etl.database import engine_for
from gridwatch.settings import Settings

__all__ = ["Upkeep"]

log = logging.getLogger(__name__)


class Upkeep(threading.Thread):
    """Age coverage and refresh alerts every ``tick_s``; rebuild coverage every ``rebuild_s``."""

    def __init__(self, url_of: Callable[[], str], *, settings: Settings, tick_s: float = 10.0,
                 rebuild_s: float = 600.0) -> None:
        super().__init__(name="situation-upkeep", daemon=True)
        self.url_of = url_of
        self.settings = settings
        self.tick_s = tick_s
        self.rebuild_s = rebuild_s
        self.last_error = ""
        self._halt = threading.Event()

    def stop(self) -> None:
        """Finish the current step and stop."""
        self._halt.set()
        self.join(timeout=30)

    def run(self) -> None:
        rebuilt_at = float("-inf")
        while not self._halt.is_set():
            try:
                engine = engine_for(self.url_of(), pool_size=1, connect_args={"connect_timeout": 3})
                try:
                    if time.monotonic() - rebuilt_at > self.rebuild_s:
                        derive_coverage(engine, settings=self.settings)
                        rebuilt_at = time.monotonic()
                    self._tick(engine)
                finally:
                    engine.dispose()
                self.last_error = ""
            except Exception as exc:  # the database may be down: try again at the next tick
                self.last_error = f"{type(exc).__name__}: " + " ".join(str(exc).split())[:300]
                log.warning("upkeep: %s", self.last_error)
            self._halt.wait(self.tick_s)

    def _tick(self, engine) -> None:
        now = datetime.now(timezone.utc)
        with engine.begin() as conn:
            age_coverage(conn.connection.driver_connection, now=now)
            refresh_alerts(conn, self.settings, now)
