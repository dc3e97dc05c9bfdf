"""Keeping the live situation current while fixes stream in.

Each written batch moves coverage at once, beside the batches, in a transaction
of its own (the writer's coverage thread calls
:func:`gridwatch.etl.coverage.move_pending_coverage`; what a busy lock kept
pending, its next try or the next tick counts). Between batches,
time itself changes the picture: fixes leave the 1 h / 4 h / 24 h windows,
places turn due and overdue, units fall silent, alerts are raised and cleared.
:class:`Upkeep` does that on a clock, in its own thread of the ingest service
(:func:`gridwatch.etl.coverage.age_coverage`, which touches only the places
whose figures or status change). It never rebuilds coverage in full, except
once when coverage was never derived (``etl run`` rebuilds).
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timezone

from gridwatch.etl.alerts import refresh_alerts
from gridwatch.etl.coverage import age_coverage, derive_coverage
from gridwatch.etl.database import engine_for, pg_transaction
from gridwatch.settings import Settings

__all__ = ["Upkeep"]

log = logging.getLogger(__name__)


class Upkeep(threading.Thread):
    """Move the coverage windows and refresh alerts every ``tick_s``."""

    def __init__(self, url_of: Callable[[], str], *, settings: Settings, tick_s: float = 10.0) -> None:
        super().__init__(name="situation-upkeep", daemon=True)
        self.url_of = url_of
        self.settings = settings
        self.tick_s = tick_s
        self.last_error = ""
        self._halt = threading.Event()

    def stop(self) -> None:
        """Finish the current step and stop."""
        self._halt.set()
        self.join(timeout=30)

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                engine = engine_for(self.url_of(), pool_size=1, connect_args={"connect_timeout": 3})
                try:
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
        with engine.connect() as conn:
            derived = conn.exec_driver_sql("SELECT EXISTS (SELECT 1 FROM coverage_clock)").scalar()
        if not derived:
            derive_coverage(engine, settings=self.settings, as_of=now)
        with pg_transaction(engine) as conn:  # its own: the writer waits for the coverage lock only this long
            age_coverage(conn, settings=self.settings, now=now)
        with engine.begin() as conn:
            refresh_alerts(conn, self.settings, now)
