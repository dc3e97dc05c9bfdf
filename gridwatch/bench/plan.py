"""``gridwatch bench plan``: what the grid planner's checks, proposals and brush cost.

- Validation after one edit: p95 of a paint edit and the check of every rule that follows it
  (:func:`gridwatch.geo.plan.apply`, what the page runs), on a township of 200 grids and 2,000 faces;
  baseline: a full :func:`gridwatch.geo.topology.check_tiling` of the same township's grids.
- Full prefecture validation: p95 of :func:`gridwatch.geo.plan_rules.check_plan` on 1,500 grids in
  36 townships (15,000 faces); baseline: ``check_tiling`` of the prefecture's grids.
- Rebalancing proposal for the 200-grid township (:func:`gridwatch.geo.rebalance.propose`);
  baseline: the checks of the proposal.
- Paint-stroke feedback in the browser: p95 of the time from a brush's pointer event to the map
  drawn with the painted faces, on the served ``/plan`` page in headless Chromium (the township in
  PostGIS, its faces cut by the planner's own set-up); baseline: the server's answer to the stroke
  (the edit, its checks and the new state), from pointer up to the callback's response.
"""
from __future__ import annotations

import time

import geopandas as gpd
import numpy as np

from gridwatch.bench import Figure
from gridwatch.bench._harness import p95_ms, timed
from gridwatch.settings import Settings

__all__ = ["bench_plan"]

EDITS = 100
RUNS = 10
STROKES = 6


def _tiling(plan) -> None:
    """The full topology check of a plan's grids as polygons against their townships."""
    from gridwatch.geo.plan import grid_geometries
    from gridwatch.geo.topology import check_tiling

    shapes = grid_geometries(plan)
    grids = gpd.GeoDataFrame({"code": shapes.index, "township_code": plan.grids.loc[shapes.index, "township"]
                              .to_numpy()}, geometry=shapes.values, crs=shapes.crs)
    towns = plan.faces.dissolve("township").reset_index().rename(columns={"township": "code"})
    check_tiling(grids, towns[["code", "geometry"]])


def _edits(plan, n: int, seed: int = 1) -> list[tuple[int, str]]:
    """``n`` paint edits: a face on a grid's edge given to the neighbour across it."""
    i, j, _ = plan.blocks.edges
    across = np.flatnonzero(plan.grid[i] != plan.grid[j])
    picks = np.random.default_rng(seed).choice(across, n)
    ids = plan.faces["face_id"].to_numpy()
    return [(int(ids[i[k]]), str(plan.grid[j[k]])) for k in picks]


def _validation(township, prefecture) -> list[Figure]:
    from gridwatch.geo import plan as edits
    from gridwatch.geo.plan_rules import check_plan

    before = check_plan(township)
    times = []
    for face, grid in _edits(township, EDITS):
        start = time.perf_counter()
        edits.apply(township, lambda p, f=face, g=grid: edits.paint(p, [f], g), check=check_plan, before=before)
        times.append(time.perf_counter() - start)
    tiling = timed(lambda: _tiling(township), 5)
    whole = timed(lambda: check_plan(prefecture), RUNS)
    whole_tiling = timed(lambda: _tiling(prefecture), 1)
    return [
        Figure(f"validation after one edit p95 ({EDITS} paint edits, 200 grids, {len(township.faces):,} faces)",
               p95_ms(times), "ms", "<= 100", p95_ms(tiling), "full check_tiling of the township"),
        Figure(f"full prefecture validation p95 ({len(prefecture.grids):,} grids, {len(prefecture.faces):,} faces)",
               p95_ms(whole), "ms", "<= 1000", p95_ms(whole_tiling), "check_tiling of the prefecture"),
    ]


def _proposal(township) -> Figure:
    """A rebalancing proposal for the township, its rules checked after."""
    from gridwatch.geo.plan_rules import check_plan
    from gridwatch.geo.rebalance import rebalance_plan

    start = time.perf_counter()
    proposed, proposal, _ = rebalance_plan(township, time_limit_s=60.0)
    seconds = time.perf_counter() - start
    kinds = {p.kind for p in check_plan(proposed)}
    met = proposal.met and not kinds & {"multipart", "compactness", *(f"{m}_{s}" for m in ("households", "population",
                                                                                         "workload")
                                                                    for s in ("below", "above"))}
    checks = timed(lambda: check_plan(proposed), 5)
    return Figure(f"rebalancing proposal, 200 grids ({proposal.steps} steps; rules {'met' if met else 'NOT met'})",
                  seconds * 1000 if met else float("inf"), "ms", "<= 20000", float(np.median(checks)) * 1000,
                  "checking the proposal")


def _feedback(settings: Settings, township) -> Figure:
    """Paint strokes on the served page; the map's feedback and the server's answer."""
    from playwright.sync_api import sync_playwright

    from gridwatch.bench._harness import (
        CHROMIUM,
        CHROMIUM_ARGS,
        bench_engine,
        new_account,
        offline_page,
        seed_plan_region,
        serving,
    )
    from gridwatch.dashboard.app import create_app

    with bench_engine(settings) as engine:
        seed_plan_region(engine, township)
        app = create_app(engine.url.render_as_string(hide_password=False), settings)
        account = new_account(engine, "planner")
        with serving(app.server) as base, sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            context, page, _ = offline_page(browser, base, account=account)
            page.goto(f"{base}/plan")
            page.wait_for_function("() => window.gridwatchPlan && window.gridwatchPlan.ready", timeout=120_000)
            page.check("#plan-tool input[value='paint']")
            page.wait_for_function("() => window.gridwatchPlan.tool === 'paint'")
            box = page.locator("#plan-map").bounding_box()
            answers = []
            for k in range(STROKES):
                y = box["y"] + box["height"] * (0.2 + 0.1 * k)
                page.mouse.move(box["x"] + box["width"] * 0.3, y)
                page.mouse.down()
                for step in range(1, 11):
                    page.mouse.move(box["x"] + box["width"] * (0.3 + 0.03 * step), y, steps=2)
                with page.expect_response(lambda r: "_dash-update-component" in r.url and r.request.post_data
                                          and "plan-edit" in r.request.post_data) as answer:
                    start = time.perf_counter()
                    page.mouse.up()
                answer.value.finished()
                answers.append(time.perf_counter() - start)
                page.wait_for_timeout(300)
            feedback = page.evaluate("() => window.gridwatchPlan.feedbackMs.slice()")
            context.close()
            browser.close()
    return Figure(f"paint-stroke feedback p95 ({len(feedback)} brush moves, {STROKES} strokes)",
                  float(np.percentile(feedback, 95)) if feedback else float("nan"), "ms", "<= 150",
                  p95_ms(answers), "the server's answer to a stroke")


def bench_plan(settings: Settings, *, scale: str) -> list[Figure]:
    """The planner's figures; ``scale`` does not apply (the township and prefecture sizes are the issue's)."""
    from gridwatch.data.plan_township import plan_township

    township = plan_township(grids=200, faces_per_grid=10, seed=0)
    prefecture = plan_township(grids=1500, faces_per_grid=10, townships_per_side=6, seed=2)
    return [*_validation(township, prefecture), _proposal(township), _feedback(settings, township)]
