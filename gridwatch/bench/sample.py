"""``gridwatch bench sample``: how long the sample region takes to generate."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pandas as pd

from gridwatch.bench import Figure
from gridwatch.data.sample import fixed_end, generate_sample
from gridwatch.settings import Settings

__all__ = ["bench_sample"]

TARGETS_S = {"small": 5.0, "prefecture": 60.0, "province": 900.0}


def bench_sample(settings: Settings, *, scale: str) -> list[Figure]:
    """Generate the prefecture and province samples (or just ``scale`` if small); time each."""
    scales = ["small"] if scale == "small" else ["prefecture", "province"]
    figures = []
    for name in scales:
        with tempfile.TemporaryDirectory(dir=settings.home_dir if settings.home_dir.exists() else None) as tmp:
            started = time.perf_counter()
            generate_sample(Path(tmp), seed=1, scale=name, progress=True, end=fixed_end(1))
            seconds = time.perf_counter() - started
            rows = len(pd.read_csv(Path(tmp) / "positions.csv", engine="pyarrow"))
        figures.append(Figure(f"generate {name}", seconds, "s", f"<= {TARGETS_S[name]:g}"))
        figures.append(Figure(f"{name} position rows (CSV)", rows, "rows"))
    return figures
