"""What the live ingest counts, kept across restarts in a file of the spool folder.

The doors' counts (:class:`Counters`) and the writer's (the fields that
:class:`gridwatch.etl.ingest.writer.WriterStats` names in ``COUNTED``) go on from
the totals the last run saved, so a restart does not zero them; ``since`` says
when counting began (the spool's first start, or when an unreadable counts
file was set aside). :class:`CountsFile` rewrites the file every few seconds
and at a clean stop, so a kill -9 loses at most the counts of that interval.
"""
from __future__ import annotations

import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import ClassVar

__all__ = ["Counters", "CountsFile"]

log = logging.getLogger(__name__)


@dataclass
class Counters:
    """What the doors saw: fixes taken and refused, devices refused, connections refused and closed."""

    COUNTED: ClassVar[tuple[str, ...]] = (
        "accepted", "spooled", "rejected", "unauthorized", "rate_limited", "spool_refused",
        "cot_connections", "cot_dropped", "cot_ignored", "http_refused", "http_closed",
    )

    accepted: int = 0
    spooled: int = 0
    rejected: Counter = field(default_factory=Counter)
    unauthorized: int = 0
    rate_limited: int = 0
    spool_refused: int = 0  # fixes answered 503 (or dropped, over CoT) because the spool's disk refused them
    cot_connections: int = 0
    cot_dropped: Counter = field(default_factory=Counter)
    cot_ignored: int = 0
    http_refused: Counter = field(default_factory=Counter)  # connections refused at the caps
    http_closed: Counter = field(default_factory=Counter)  # connections closed for taking too long


class CountsFile:
    """The totals of ``parts`` (name → an object whose ``COUNTED`` fields are ints or Counters) in ``path``."""

    def __init__(self, path: Path, **parts: object) -> None:
        self.path = path
        self.parts = parts
        self.since = datetime.now(timezone.utc)

    def load(self) -> None:
        """Add the saved totals to the parts; an unreadable file is set aside and counting starts anew."""
        try:
            saved = json.loads(self.path.read_text())
            since = datetime.fromisoformat(saved["since"])
            totals = {name: saved[name] for name in self.parts}
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as exc:
            aside = self.path.with_suffix(".unreadable")
            log.warning("ingest counters: %s is unreadable (%s); moved to %s, counting starts now",
                        self.path, type(exc).__name__, aside)
            self.path.replace(aside)
            return
        self.since = since
        for name, part in self.parts.items():
            for key in part.COUNTED:
                value = getattr(part, key)
                if isinstance(value, Counter):
                    value.update({k: int(v) for k, v in dict(totals[name].get(key, {})).items()})
                else:
                    setattr(part, key, value + int(totals[name].get(key, 0)))

    def save(self) -> None:
        """Write the totals (atomically); a full disk keeps the last file."""
        data = {"since": self.since.isoformat()}
        for name, part in self.parts.items():
            data[name] = {key: (dict(v) if isinstance(v := getattr(part, key), Counter) else v)
                          for key in part.COUNTED}
        tmp = self.path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(data))
            os.replace(tmp, self.path)
        except OSError as exc:
            log.debug("ingest counters not saved: %s", exc)
