"""``gridwatch bench NAME``: benchmarks that print each figure beside its baseline.

A benchmark is a function ``(settings, *, scale) -> list[Figure]`` in the
module that owns the path it measures; this table names them.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass

from gridwatch.errors import InputError
from gridwatch.settings import Settings

__all__ = ["BENCHMARKS", "Figure", "run_benchmark", "format_figures"]

BENCHMARKS: dict[str, str] = {
    "sample": "data.bench:bench_sample",
    "etl": "etl.bench:bench_etl",
    "tiles": "layers.bench:bench_tiles",
    "ingest": "etl.ingest.bench:bench_ingest",
    "dispatch": "layers.dispatch_bench:bench_dispatch",
    "soak": "dashboard.soak:bench_soak",
}


@dataclass(frozen=True)
class Figure:
    """One measured figure, its target, and a baseline measured in the same run."""

    name: str
    value: float
    unit: str
    target: str = ""
    baseline: float | None = None
    baseline_name: str = ""

    @property
    def ratio(self) -> str:
        if not self.baseline:
            return ""
        ratio = self.value / self.baseline
        return f"{ratio:.1f}x" if ratio >= 0.1 else f"{ratio:.3f}x"


def run_benchmark(name: str, settings: Settings, *, scale: str) -> list[Figure]:
    """Run the benchmark called ``name``."""
    if name not in BENCHMARKS:
        raise InputError(f"benchmark {name!r} is unknown; expected one of {sorted(BENCHMARKS)}")
    module, func = BENCHMARKS[name].split(":")
    return getattr(importlib.import_module(module), func)(settings, scale=scale)


def format_figures(figures: list[Figure]) -> str:
    """A plain-text table of the figures."""
    rows = [("figure", "value", "target", "baseline", "vs baseline")]
    for f in figures:
        base = f"{f.baseline:,.1f} {f.unit} ({f.baseline_name})" if f.baseline is not None else ""
        rows.append((f.name, f"{f.value:,.1f} {f.unit}", f.target, base, f.ratio))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
