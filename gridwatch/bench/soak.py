"""The wall left running: browser memory over thousands of refreshes (``gridwatch bench soak``).

A wall display runs for days without a click. This drives the real wall in
headless Chromium with its refresh periods shortened (live units every 0.1 s,
the rest every 1 s) while every unit moves each half second, and samples the
page's JavaScript heap after a forced garbage collection, its DOM nodes and its
event listeners for ten minutes. The first minute (compiled code, glyphs,
tiles) is warm-up; what grows after it is what a wall would pile up over days.
"""
from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import sqlalchemy as sa
from tqdm import tqdm

from gridwatch.bench import Figure
from gridwatch.data.synthetic import REGIONS, make_region
from gridwatch.errors import GridwatchError, InputError
from gridwatch.layers.queries import jurisdiction_bounds
from gridwatch.settings import Settings

__all__ = ["SOAK_REFRESH", "MAX_HEAP_GROWTH_MB", "MAX_NODES_ADDED", "MAX_LISTENERS_ADDED", "PageSample",
           "moving_units", "soak", "growth", "bench_soak"]

# Refresh periods of a soak: fifty times the wall's live rate, thirty times its slow one.
SOAK_REFRESH = {"live_refresh_s": 0.1, "refresh_s": 1.0}
MOVE_EVERY_S = 0.5
SOAK_S = 600.0
SAMPLE_EVERY_S = 20.0
WARM_UP_S = 60.0
# What a wall may gain over a soak and still run for days: next to nothing.
MAX_HEAP_GROWTH_MB = 1.0
MAX_NODES_ADDED = 20
MAX_LISTENERS_ADDED = 50

# Every unit steps ~10 m along its heading: a new fix in position and unit_latest. Straight
# tracks keep the trails' simplified size steady, so what grows is what the page keeps.
_MOVE = sa.text("""
WITH moved AS (
    UPDATE unit_latest SET ts = clock_timestamp(), heading = coalesce(heading, 45),
        geom = ST_Translate(geom, 0.0001 * sin(radians(coalesce(heading, 45))),
                                  0.0001 * cos(radians(coalesce(heading, 45))))
    RETURNING unit_id, ts, geom, speed, heading, accuracy, source
)
INSERT INTO position (unit_id, ts, geom, speed, heading, accuracy, source) SELECT * FROM moved
""")


@dataclass(frozen=True)
class PageSample:
    """The page at one moment of a soak."""

    seconds: float
    live_refreshes: int
    heap_mb: float
    nodes: int
    listeners: int


@contextmanager
def moving_units(engine: sa.Engine, every_s: float = MOVE_EVERY_S) -> Iterator[None]:
    """Move every unit each ``every_s`` seconds (in a thread) while the block runs."""
    with engine.begin() as conn:
        conn.execute(sa.text("SELECT ensure_position_partitions(now(), now() + interval '1 day')"))
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(every_s):
            with engine.begin() as conn:
                conn.execute(_MOVE)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)


def soak(page, *, every_s: float, seconds: float, refreshes: int | None = None,
         progress: bool = False) -> list[PageSample]:
    """Sample an open wall page every ``every_s`` seconds (the first at once) until ``refreshes``
    live refreshes were drawn, or for ``seconds`` (without ``refreshes``, or as the cap that
    stops a page that no longer draws)."""
    drawn = [0]

    def count(response) -> None:  # a live refresh the server answered with new traces
        request = response.request
        if (response.status == 200 and "/_dash-update-component" in request.url
                and "wall-map.figure" in (request.post_data or "")):
            drawn[0] += 1

    page.on("response", count)
    cdp = page.context.new_cdp_session(page)
    cdp.send("Performance.enable")
    start = time.monotonic()
    samples: list[PageSample] = []
    total = refreshes if refreshes is not None else math.ceil(seconds / every_s) + 1
    bar = tqdm(total=total, disable=not progress, desc="soak", unit="refresh" if refreshes else "sample")
    try:
        while True:
            metrics = _after_gc(cdp)
            samples.append(PageSample(time.monotonic() - start, drawn[0], metrics["JSHeapUsedSize"] / 2**20,
                                      int(metrics["Nodes"]), int(metrics["JSEventListeners"])))
            bar.update(min(drawn[0], total) - bar.n if refreshes else 1)
            bar.set_postfix(heap=f"{samples[-1].heap_mb:.1f} MB", refreshes=drawn[0])
            if samples[-1].seconds >= seconds or (refreshes is not None and drawn[0] >= refreshes):
                return samples
            page.wait_for_timeout(every_s * 1000)  # (events, such as responses, are handled while waiting)
    finally:
        bar.close()
        page.remove_listener("response", count)
        cdp.detach()


def _after_gc(cdp, readings: int = 3) -> dict[str, float]:
    """The page's metrics after a forced garbage collection, the reading with the smallest heap of a few
    (a collection that ran while a refresh was being drawn still holds that refresh's buffers)."""
    taken = []
    for _ in range(readings):
        cdp.send("HeapProfiler.collectGarbage")
        taken.append({m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]})
    return min(taken, key=lambda m: m["JSHeapUsedSize"])


def growth(samples: list[PageSample], measure: str) -> float:
    """How much ``measure`` (heap_mb, nodes, listeners) grew from the first to the last third of the samples:
    medians, so one sample taken while a refresh was being drawn counts little, and what leaks still shows."""
    third = max(1, len(samples) // 3)
    values = [getattr(s, measure) for s in samples]
    return float(np.median(values[-third:]) - np.median(values[:third]))


def bench_soak(settings: Settings, *, scale: str) -> list[Figure]:
    """The wall's heap, DOM nodes and listeners after a soak of ``SOAK_S`` seconds, against the warmed-up page."""
    from gridwatch.bench._harness import INTERACTIVE, bench_engine, new_account, offline_browser, offline_page, serving
    from gridwatch.dashboard.app import create_app

    if scale not in REGIONS:
        raise InputError(f"scale {scale!r} is unknown; expected one of {sorted(REGIONS)}")
    with bench_engine(settings) as engine:
        make_region(engine, REGIONS[scale])
        bounds = list(jurisdiction_bounds(engine))
        app = create_app(engine.url.render_as_string(hide_password=False), settings.model_copy(update=SOAK_REFRESH))
        with offline_browser() as browser, serving(app.server) as base, moving_units(engine):
            context, page, refused = offline_page(browser, base, account=new_account(engine))
            page.goto(f"{base}/wall")
            page.wait_for_function(INTERACTIVE, arg=bounds, timeout=120_000, polling=100)
            page.wait_for_timeout(WARM_UP_S * 1000)
            samples = soak(page, every_s=SAMPLE_EVERY_S, seconds=SOAK_S, progress=True)
            context.close()
    if refused:
        raise GridwatchError(f"the wall asked other origins (it must work offline): {sorted(set(refused))[:5]}")
    return _figures(samples, settings)


def _figures(samples: list[PageSample], settings: Settings) -> list[Figure]:
    first, last = samples[0], samples[-1]
    refreshes = last.live_refreshes
    wall_h = refreshes * settings.live_refresh_s / 3600
    slope = np.polyfit([s.live_refreshes for s in samples], [s.heap_mb for s in samples], 1)[0] if refreshes else 0.0
    return [
        Figure(f"live refreshes drawn in {last.seconds:.0f} s (a wall's {wall_h:.1f} h at {settings.live_refresh_s:g} s)",
               refreshes, "", ""),
        Figure("JS heap after GC, end of soak", last.heap_mb, "MB", "", first.heap_mb, "warmed-up page"),
        Figure("JS heap growth, first third to last third (medians)", growth(samples, "heap_mb"), "MB",
               f"<= {MAX_HEAP_GROWTH_MB:g}"),
        Figure("JS heap trend per 1,000 live refreshes (least squares)", float(slope) * 1000, "MB",
               f"<= {MAX_HEAP_GROWTH_MB:g}"),
        Figure("DOM nodes added, first third to last third (medians)", growth(samples, "nodes"), "",
               f"<= {MAX_NODES_ADDED}"),
        Figure("event listeners added, first third to last third (medians)", growth(samples, "listeners"), "",
               f"<= {MAX_LISTENERS_ADDED}"),
    ]
