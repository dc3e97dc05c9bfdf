"""The fault scenarios of ``gridwatch bench faults`` not covered elsewhere, at small scale (their
figures, such as the seconds to recover, are the benchmark's)."""
from __future__ import annotations

import pytest

from gridwatch.bench.faults import wall_restart
from gridwatch.settings import get_settings

pytestmark = pytest.mark.browser


def test_the_wall_draws_live_units_again_after_its_database_is_stopped_and_started() -> None:
    """A real stop and start of an embedded cluster of its own, the wall open in Chromium the whole time."""
    row = wall_restart(get_settings())
    assert row.recover_s is not None and row.recover_s > 0  # it drew the moved unit again
    assert "asked other origins" not in row.goal
