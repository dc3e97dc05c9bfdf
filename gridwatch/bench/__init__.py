"""``gridwatch bench NAME``: every benchmark, each figure beside its goal and a baseline.

A benchmark is a function ``(settings, *, scale) -> list[Figure]`` in the module of
this package named after what it measures; :data:`BENCHMARKS` lists them. Each
figure is printed on a line of its own: the value, the goal the issue names, MET or
MISSED, the baseline measured in the same run (and the ratio), and the machine's
load average when it was measured, so a figure from a busy machine can be told apart.
``gridwatch bench all`` runs them in turn (:func:`run_all`).
"""
from __future__ import annotations

import importlib
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from gridwatch.errors import GridwatchError, InputError
from gridwatch.settings import Settings

__all__ = ["BENCHMARKS", "NOT_IN_ALL", "Figure", "Goal", "Scenario", "run_benchmark", "run_all", "format_figures"]

BENCHMARKS: dict[str, str] = {
    "sample": "sample:bench_sample",
    "etl": "etl:bench_etl",
    "tiles": "tiles:bench_tiles",
    "ingest": "ingest:bench_ingest",
    "dispatch": "dispatch:bench_dispatch",
    "soak": "soak:bench_soak",
    "faults": "faults:bench_faults",
    "fuzz": "fuzz:bench_fuzz",
    "access": "access:bench_access",
    "plan": "plan:bench_plan",
    "startup": "startup:bench_startup",
    "evidence": "evidence:bench_evidence",
}
# Left out of ``bench all`` at the scales named, with the reason it prints: too long beside the others.
NOT_IN_ALL = {
    "sample": ("past the small scale it generates the province sample too, whose goal alone is 15 min",
               frozenset({"prefecture", "province"})),
    "soak": ("it watches the wall for 11 min by design", frozenset({"small", "prefecture", "province"})),
}
# The goal of ``bench all``, in minutes, per scale (the issue names the prefecture's).
ALL_GOAL_MIN = {"prefecture": "<= 15"}

_GOAL = re.compile(r"^(<=|>=|≤|≥|<|>)\s*([-+]?[\d,]*\.?\d+)\s*(x|×)?$")


@dataclass(frozen=True)
class Goal:
    """What a figure must reach: ``value <= limit`` (or ``>=``), or that ratio to its baseline.

    >>> Goal.parse("<= 50").met(20.0, None), Goal.parse(">= 1.0x").met(90.0, 100.0)
    (True, False)
    """

    op: str
    limit: float
    of_baseline: bool = False

    @classmethod
    def parse(cls, text: str) -> Goal:
        """``"<= 50"``, ``"≥ 50,000"`` or ``">= 1.0x"`` (times the baseline)."""
        found = _GOAL.match(text.strip())
        if found is None:
            raise ValueError(f"goal {text!r} is not of the form '<= 50', '>= 2,000' or '>= 1.0x'")
        op = {"≤": "<=", "≥": ">=", "<": "<=", ">": ">="}.get(found.group(1), found.group(1))
        return cls(op, float(found.group(2).replace(",", "")), found.group(3) is not None)

    def met(self, value: float, baseline: float | None) -> bool:
        """Whether ``value`` (against ``baseline``, for a ratio goal) reaches the goal."""
        if self.of_baseline:
            if not baseline:
                return False
            value = value / baseline
        return value <= self.limit if self.op == "<=" else value >= self.limit

    def describe(self, unit: str) -> str:
        """The goal as printed: ``≤ 50 ms``, ``≥ 1.0× baseline``."""
        sign = "≤" if self.op == "<=" else "≥"
        return f"{sign} {self.limit:g}× baseline" if self.of_baseline else f"{sign} {self.limit:,g} {unit}".rstrip()


@dataclass(frozen=True)
class Figure:
    """One measured figure, the goal it must reach, and a baseline measured in the same run.

    ``goal`` is a :class:`Goal` in text (``"<= 50"``, ``">= 1.0x"``) or empty when the
    issue names none; the load average is read when the figure is made, right after
    its measurement.
    """

    name: str
    value: float
    unit: str
    goal: str = ""
    baseline: float | None = None
    baseline_name: str = ""
    load: float = field(default_factory=lambda: os.getloadavg()[0])

    def __post_init__(self) -> None:
        if self.goal:
            Goal.parse(self.goal)  # a malformed goal fails where it is written

    @property
    def result(self) -> str:
        """``MET``, ``MISSED``, or ``-`` without a goal."""
        if not self.goal:
            return "-"
        return "MET" if Goal.parse(self.goal).met(self.value, self.baseline) else "MISSED"

    @property
    def ratio(self) -> str:
        if not self.baseline:
            return ""
        ratio = self.value / self.baseline
        return f"{ratio:.1f}x" if ratio >= 0.1 else f"{ratio:.3f}x"


@dataclass(frozen=True)
class Scenario:
    """One fault scenario's outcome: fixes or rows acknowledged, stored, quarantined, lost and
    duplicated (None where the scenario has no such thing), seconds to recover, and its goal."""

    name: str
    acknowledged: int | None
    stored: int | None
    quarantined: int | None
    lost: int | None
    duplicated: int | None
    recover_s: float | None
    goal: str
    met: bool
    load: float = field(default_factory=lambda: os.getloadavg()[0])

    def cells(self) -> tuple[str, ...]:
        def n(v: float | None, fmt: str = ",") -> str:
            return "-" if v is None else format(v, fmt)
        return (self.name, n(self.acknowledged), n(self.stored), n(self.quarantined), n(self.lost),
                n(self.duplicated), n(self.recover_s, ",.1f"), self.goal, "MET" if self.met else "MISSED",
                f"{self.load:.2f}")


def run_benchmark(name: str, settings: Settings, *, scale: str) -> list[Figure | Scenario]:
    """Run the benchmark called ``name``."""
    if name not in BENCHMARKS:
        raise InputError(f"benchmark {name!r} is unknown; expected one of {sorted(BENCHMARKS)} (or all)")
    module, func = BENCHMARKS[name].split(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), func)(settings, scale=scale)


def run_all(settings: Settings, *, scale: str, echo: Callable[[str], None]) -> list[Figure]:
    """Run every benchmark (but those :data:`NOT_IN_ALL` at ``scale``) in turn, echoing each one's
    figures as it finishes.

    Returns each benchmark's wall time and the total against :data:`ALL_GOAL_MIN` (the slowest
    benchmark its baseline). A benchmark that fails with an expected error is echoed and the others
    still run; the error is raised, naming them, once all have run and their times are echoed.
    """
    minutes: dict[str, float] = {}
    failed: list[str] = []
    started = time.perf_counter()
    for name in BENCHMARKS:
        reason, scales = NOT_IN_ALL.get(name, ("", frozenset()))
        if scale in scales:
            echo(f"== {name}: left out of all ({reason}): run gridwatch bench {name}\n")
            continue
        echo(f"== {name}")
        begun = time.perf_counter()
        try:
            echo(format_figures(run_benchmark(name, settings, scale=scale)) + "\n")
        except GridwatchError as exc:
            failed.append(name)
            echo(f"{name}: error: {' '.join(str(exc).split())}\n")
        minutes[name] = (time.perf_counter() - begun) / 60
    slowest = max(minutes, key=minutes.__getitem__)
    figures = [Figure(f"bench {name} wall time", value, "min") for name, value in minutes.items()]
    figures.append(Figure(f"bench all --scale {scale} wall time ({len(minutes)} benchmarks)",
                          (time.perf_counter() - started) / 60, "min", ALL_GOAL_MIN.get(scale, ""),
                          minutes[slowest], f"slowest: {slowest}"))
    echo(format_figures(figures))
    if failed:
        raise GridwatchError(f"bench all: {', '.join(failed)} failed (see above); the others ran")
    return figures


def format_figures(results: list[Figure | Scenario]) -> str:
    """Plain-text tables: one line per figure, then one per scenario."""
    tables = []
    figures = [f for f in results if isinstance(f, Figure)]
    if figures:
        rows = [("figure", "value", "goal", "result", "baseline (same run)", "vs baseline", "load avg")]
        for f in figures:
            base = f"{f.baseline:,.1f} {f.unit} ({f.baseline_name})" if f.baseline is not None else ""
            goal = Goal.parse(f.goal).describe(f.unit) if f.goal else ""
            rows.append((f.name, f"{f.value:,.1f} {f.unit}", goal, f.result, base, f.ratio, f"{f.load:.2f}"))
        tables.append(_table(rows))
    scenarios = [s for s in results if isinstance(s, Scenario)]
    if scenarios:
        header = ("scenario", "acknowledged", "stored", "quarantined", "lost", "duplicated", "recover s", "goal",
                  "result", "load avg")
        tables.append(_table([header, *(s.cells() for s in scenarios)]))
    return "\n\n".join(tables)


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
