"""The wall left running: the page's memory over hundreds of refreshes, in headless Chromium."""
from __future__ import annotations

import pytest

from gridwatch.bench._harness import new_account
from gridwatch.bench.soak import (
    MAX_HEAP_GROWTH_MB,
    MAX_LISTENERS_ADDED,
    MAX_NODES_ADDED,
    SOAK_REFRESH,
    growth,
    moving_units,
    soak,
)
from gridwatch.dashboard.app import create_app
from gridwatch.data.synthetic import REGIONS, make_region
from gridwatch.settings import get_settings

from _browser import READY, offline_page, serving

pytestmark = pytest.mark.browser

WARM_UP_REFRESHES = 100  # the heap settles over the first minutes (compiled code, caches)
REFRESHES = 100
CAP_S = 600.0  # only stops a page that no longer draws: a busy machine takes longer, never fails for it
# Samples every 2 s: a subtree React has just replaced stays alive for a second or two (~60 nodes), so the
# last third's median must span more samples than such a moment can fill; a leak stays in all of them.
SAMPLE_EVERY_S = 2


def test_memory_stays_flat_over_hundreds_of_refreshes(clean_db, db_url):
    """The wall at fifty times its live rate while every unit moves: over 100 drawn refreshes the heap,
    DOM nodes and listeners stay flat (a page too slow for its rate skips ticks rather than queueing them)."""
    make_region(clean_db, REGIONS["small"])
    app = create_app(db_url, get_settings().model_copy(update=SOAK_REFRESH))
    with serving(app.server) as base, offline_page(base, account=new_account(clean_db)) as (page, watch), moving_units(clean_db):
        page.goto(f"{base}/wall")
        page.wait_for_function(READY, timeout=60_000)
        # warm-up: glyphs, tiles, compiled code and the browser's own buffers
        soak(page, every_s=5, seconds=CAP_S, refreshes=WARM_UP_REFRESHES)
        samples = soak(page, every_s=SAMPLE_EVERY_S, seconds=CAP_S, refreshes=REFRESHES)
    assert samples[-1].live_refreshes >= REFRESHES, samples  # it kept drawing to the end
    assert growth(samples, "heap_mb") < MAX_HEAP_GROWTH_MB, samples  # the unbounded queue it replaced grew ~30 MB a minute
    assert growth(samples, "nodes") <= MAX_NODES_ADDED, samples
    assert growth(samples, "listeners") <= MAX_LISTENERS_ADDED, samples
    assert not watch.console_errors, watch.console_errors
