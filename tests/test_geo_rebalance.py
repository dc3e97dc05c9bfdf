"""Automatic rebalancing of a township's grids (geo/rebalance.py): pure, no database."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.sparse import coo_array
from scipy.sparse.csgraph import connected_components

from gridwatch.geo.rebalance import Proposal, plan_score, propose

MEASURES = ("households", "population", "workload")
SIZE_M = 100.0


def lattice(nx: int = 40, ny: int = 50, blocks: tuple[int, int] = (5, 5), gradient: float = 0.75):
    """A township of ``nx × ny`` square faces of 100 m, grids of ``blocks`` equal rectangles.

    Households grow smoothly from west to east (by ``1 ± gradient``), so the blocks are out of
    balance by about ±60 % at the default; population and workload follow them with a little
    variation of their own.
    """
    x, y = np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij")
    x, y = x.ravel(), y.ravel()
    u, v = x / (nx - 1), y / (ny - 1)
    gx, gy = x * blocks[0] // nx, y * blocks[1] // ny
    households = 10.0 * (1.0 + gradient * (2.0 * u - 1.0))
    faces = pd.DataFrame({
        "grid": [f"G{a}{b}" for a, b in zip(gx, gy)],
        "locked": False,
        "households": households,
        "population": households * 2.8 * (1.0 + 0.1 * v),
        "workload": 0.3 * households * (1.0 + 0.15 * (2.0 * v - 1.0)),
        "area_m2": SIZE_M**2,
        "perimeter_m": 4.0 * SIZE_M,
    })
    index = np.arange(nx * ny).reshape(nx, ny)
    i = np.concatenate([index[:-1, :].ravel(), index[:, :-1].ravel()])
    j = np.concatenate([index[1:, :].ravel(), index[:, 1:].ravel()])
    return faces, (i, j, np.full(len(i), SIZE_M))


def assert_rules_met(faces, edges, grid, *, tolerance=0.25, min_compactness=0.2):
    """Every grid within tolerance in every measure, contiguous, compact enough (computed here)."""
    codes, assign = np.unique(grid, return_inverse=True)
    n_grids = len(codes)
    for m in MEASURES:
        values = faces[m].to_numpy(float)
        sums = np.bincount(assign, weights=values, minlength=n_grids)
        deviation = np.abs(sums / (values.sum() / n_grids) - 1.0)
        assert deviation.max() <= tolerance + 1e-9, (m, codes[deviation.argmax()], deviation.max())
    i, j, length = edges
    same = assign[i] == assign[j]
    n = len(grid)
    _, component = connected_components(coo_array((np.ones(same.sum()), (i[same], j[same])), shape=(n, n)))
    pieces = np.bincount(np.unique(np.column_stack([assign, component]), axis=0)[:, 0], minlength=n_grids)
    assert (pieces == 1).all(), codes[pieces != 1]
    area = np.bincount(assign, weights=faces["area_m2"].to_numpy(float), minlength=n_grids)
    internal = np.bincount(assign[i][same], weights=length[same], minlength=n_grids)
    perimeter = np.bincount(assign, weights=faces["perimeter_m"].to_numpy(float), minlength=n_grids) - 2 * internal
    assert (4 * math.pi * area / perimeter**2 >= min_compactness - 1e-9).all()


@pytest.fixture(scope="module")
def township():
    return lattice()


def test_the_lattice_starts_out_of_balance(township):
    faces, edges = township
    score, met = plan_score(faces, edges)
    assert not met
    assert score["max_deviation"]["households"] == pytest.approx(0.6, abs=0.05)
    assert score["min_polsby_popper"] == pytest.approx(4 * math.pi * 800 * 1000 / 3600**2)  # 8 × 10 faces
    assert score["non_contiguous"] == 0


def test_the_proposal_meets_the_rules(township):
    faces, edges = township
    proposal = propose(faces, edges, time_limit_s=60, seed=1)
    assert isinstance(proposal, Proposal)
    assert proposal.met and not proposal.cancelled, proposal.score
    assert set(proposal.grid) == set(faces["grid"])  # the same grids, by their codes
    assert_rules_met(faces, edges, proposal.grid)
    assert all(proposal.score["out_of_range"][m] == 0 for m in MEASURES)
    assert proposal.score["non_contiguous"] == 0 and proposal.score["min_polsby_popper"] >= 0.2
    assert proposal.steps > 0 and proposal.seconds < 60


@pytest.mark.parametrize("tolerance, min_compactness", [(0.15, 0.2), (0.3, 0.3)])
def test_the_rules_asked_for_are_the_rules_met(township, tolerance, min_compactness):
    faces, edges = township
    proposal = propose(faces, edges, tolerance=tolerance, min_compactness=min_compactness, time_limit_s=60)
    assert proposal.met, proposal.score
    assert_rules_met(faces, edges, proposal.grid, tolerance=tolerance, min_compactness=min_compactness)


def test_locked_grids_keep_their_faces_exactly(township):
    faces, edges = township
    faces = faces.copy()
    locked_codes = {"G00", "G22", "G41"}
    faces["locked"] = faces["grid"].isin(locked_codes)
    proposal = propose(faces, edges, time_limit_s=5)  # G00 and G41 are out of range and stay so: not met
    locked = faces["locked"].to_numpy()
    assert (proposal.grid[locked] == faces["grid"].to_numpy()[locked]).all()
    assert not set(proposal.grid[~locked]) & locked_codes  # locked grids take no faces
    assert set(proposal.grid) == set(faces["grid"])
    assert not proposal.met and proposal.score["max_deviation"]["households"] >= 0.5


def test_a_plan_that_meets_the_rules_comes_back_unchanged(township):
    faces, edges = township
    balanced = faces.assign(households=10.0, population=28.0, workload=3.0)
    proposal = propose(balanced, edges)
    assert proposal.met and proposal.steps == 0
    assert (proposal.grid == faces["grid"].to_numpy()).all()


def test_cancel_returns_the_input_and_progress_is_reported(township):
    faces, edges = township
    calls = {"cancel": 0}
    fractions: list[float] = []

    def cancel() -> bool:
        calls["cancel"] += 1
        return calls["cancel"] > 5

    proposal = propose(faces, edges, cancel=cancel, progress=fractions.append)
    assert proposal.cancelled and not proposal.met
    assert (proposal.grid == faces["grid"].to_numpy()).all()
    assert 0 < proposal.steps <= 5
    assert fractions[0] == 0.0 and fractions[-1] == 1.0 and fractions == sorted(fractions)


def test_progress_comes_at_least_every_second(township):
    faces, edges = township
    import time

    times: list[float] = []
    propose(faces, edges, tolerance=0.01, time_limit_s=2.5, progress=lambda f: times.append(time.perf_counter()))
    assert len(times) >= 4 and np.diff(times).max() < 1.0


def test_the_same_seed_gives_the_same_proposal():
    faces, edges = lattice(20, 25)
    a = propose(faces, edges, seed=3, time_limit_s=60)
    b = propose(faces, edges, seed=3, time_limit_s=60)
    assert a.met and (a.grid == b.grid).all() and a.steps == b.steps


def test_a_grid_in_pieces_is_mended():
    faces, edges = lattice(20, 25, gradient=0.0)
    grid = faces["grid"].to_numpy().copy()
    grid[0] = "G44"  # a face of the far corner's grid in the first corner
    proposal = propose(faces.assign(grid=grid), edges, time_limit_s=60)
    assert plan_score(faces.assign(grid=grid), edges)[0]["non_contiguous"] == 1
    assert proposal.met and proposal.score["non_contiguous"] == 0


def _bad(faces, edges, **kwargs):
    return propose(faces, edges, time_limit_s=1, **kwargs)


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda f, e: (f.drop(columns="workload"), e), r"lacks column\(s\) \['workload'\]"),
        (lambda f, e: (f.drop(columns=["area_m2", "locked"]), e), r"\['locked', 'area_m2'\]"),
        (lambda f, e: (f, (e[0], e[1] + 1, e[2])), r"out of range, e\.g\. .* face positions run 0\.\.1999"),
        (lambda f, e: (f, (e[0] - 1, e[1], e[2])), r"out of range"),
        (lambda f, e: (f, (e[0], e[0], e[2])), r"pairs a face with itself"),
        (lambda f, e: (f, (e[0], e[1][:-1], e[2])), r"of one length"),
        (lambda f, e: (f, (e[0].astype(float), e[1], e[2])), r"integer face positions"),
        (lambda f, e: (f, (e[0], e[1], -e[2])), r"lengths must be finite and > 0"),
        (lambda f, e: (f, (e[0], e[1])), r"tuple \(i, j, length_m\)"),
        (lambda f, e: (f.assign(households=-1.0), e), r"`faces.households` must be finite and >= 0"),
        (lambda f, e: (f.assign(population=np.nan), e), r"`faces.population` must be finite"),
        (lambda f, e: (f.assign(perimeter_m=0.0), e), r"`faces.perimeter_m` must be > 0"),
        (lambda f, e: (f.assign(locked=f["grid"].eq("G00") & (f.index % 2 == 0)), e), r"locked and unlocked"),
        (lambda f, e: (f.assign(grid=None), e), r"`faces.grid` is empty"),
        (lambda f, e: (f.iloc[:0], e), r"no rows"),
    ],
)
def test_bad_inputs_raise(township, change, match):
    faces, edges = change(*township)
    with pytest.raises(ValueError, match=match):
        _bad(faces, edges)


@pytest.mark.parametrize("tolerance", [0.0, 1.0, -0.1, 1.5, float("nan"), "a"])
def test_tolerance_must_lie_in_the_open_unit_interval(township, tolerance):
    with pytest.raises(ValueError, match=r"`tolerance` was"):
        _bad(*township, tolerance=tolerance)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"min_compactness": 1.5}, r"`min_compactness` was 1\.5 but must lie in \[0, 1\]"),
        ({"min_compactness": -0.1}, r"`min_compactness` was -0\.1"),
        ({"measures": ()}, r"`measures` was \(\) but must be a non-empty sequence"),
        ({"measures": "households"}, r"`measures` was 'households'"),
        ({"measures": ["households", "incidents"]}, r"lacks column\(s\) \['incidents'\]"),
    ],
)
def test_bad_options_raise(township, kwargs, match):
    with pytest.raises(ValueError, match=match):
        _bad(*township, **kwargs)
