"""The wall left running: the page's memory over hundreds of refreshes, in headless Chromium."""
from __future__ import annotations

import pytest

from dashboard.app import create_app
from dashboard.soak import SOAK_REFRESH, heap_growth, moving_units, soak
from gridwatch.settings import get_settings
from layers._synthetic import REGIONS, make_region
from tests._browser import READY, offline_page, serving

pytestmark = pytest.mark.browser


def test_memory_stays_flat_over_hundreds_of_refreshes(clean_db, db_url):
    """The wall at fifty times its live rate while every unit moves: heap, DOM nodes and listeners stay flat,
    and it keeps drawing to the end (a page too slow for its rate skips ticks rather than queueing them)."""
    make_region(clean_db, REGIONS["small"])
    app = create_app(db_url, get_settings().model_copy(update=SOAK_REFRESH))
    with serving(app.server) as base, offline_page(base) as (page, watch), moving_units(clean_db):
        page.goto(f"{base}/wall")
        page.wait_for_function(READY, timeout=60_000)
        page.wait_for_timeout(20_000)  # warm-up: glyphs, tiles, compiled code and the browser's own buffers
        samples = soak(page, seconds=60, every_s=5)
    first, last = samples[0], samples[-1]
    assert last.live_refreshes >= 100, samples
    assert last.live_refreshes - samples[-4].live_refreshes >= 10, samples  # still drawing at the end
    assert heap_growth(samples) < 1.0, samples  # the unbounded queue it replaced grew ~30 MB a minute
    assert last.nodes - first.nodes <= 20 and last.listeners - first.listeners <= 50, samples
    assert not watch.console_errors, watch.console_errors
