"""The grid planner page in headless Chromium: select, paint, merge, split by a drawn line, undo,
a problem that appears and goes away; and the planner's callbacks refused to other roles."""
from __future__ import annotations

import json

import numpy as np
import pyogrio
import pytest
import sqlalchemy as sa
from _accounts import ORIGIN, client_of

from gridwatch.bench._harness import callback_body, new_account, seed_plan_region
from gridwatch.dashboard.app import create_app
from gridwatch.data.plan_township import plan_township
from gridwatch.geo.plan import grid_geometries
from gridwatch.geo.plan_rules import check_plan

from _browser import offline_page, serving
from _refdata import empty_tables

READY = "() => window.gridwatchPlan && window.gridwatchPlan.ready"
STATE = "() => window.gridwatchPlan.lastState"


@pytest.fixture(scope="module")
def township():
    return plan_township(grids=16, faces_per_grid=8, seed=4)


@pytest.fixture(scope="module")
def region(engine, township):
    empty_tables(engine)
    seed_plan_region(engine, township)
    return engine


def neighbours(township) -> tuple[str, str]:
    """Two grids of one police area that share an edge, neither with a problem."""
    troubled = {c for p in check_plan(township) for c in p.codes}
    i, j, _ = township.blocks.edges
    g, area = township.grid, township.faces["police_area"].to_numpy()
    fine = (g[i] != g[j]) & (area[i] == area[j]) & ~np.isin(g[i], list(troubled)) & ~np.isin(g[j], list(troubled))
    k = np.flatnonzero(fine)[0]
    return tuple(sorted((str(g[i[k]]), str(g[j[k]]))))


@pytest.fixture(scope="module")
def desk(region, db_url):
    """The planner page, its faces drawn; yields (page, watch)."""
    app = create_app(db_url)
    account = new_account(region, "planner")
    with serving(app.server) as base, offline_page(base, account=account, viewport=(1600, 1000)) as (page, watch):
        page.goto(f"{base}/plan")
        page.wait_for_function(READY, timeout=90_000)
        yield page, watch
    assert not watch.offsite, f"requests to other origins: {watch.offsite}"
    assert not watch.csp_violations, "\n".join(watch.csp_violations)
    assert not watch.console_errors, "\n".join(watch.console_errors)


def at(page, lon: float, lat: float) -> tuple[float, float]:
    """The page pixel of a lon/lat on the planner map."""
    box = page.locator("#plan-map").bounding_box()
    point = page.evaluate("([x, y]) => window.gridwatchPlan.map.project([x, y])", [lon, lat])
    return box["x"] + point["x"], box["y"] + point["y"]


def inside(township, code: str) -> tuple[float, float]:
    point = grid_geometries(township, [code]).iloc[0].representative_point()
    return point.x, point.y


def problems(page) -> str:
    return page.inner_text("#plan-problems")


def grids_listed(page) -> list[str]:
    return page.evaluate("() => window.gridwatchPlan.lastState.grids.map(g => g.code)")


def use(page, tool: str) -> None:
    page.check(f"#plan-tool input[value='{tool}']")
    page.wait_for_function("(t) => window.gridwatchPlan.tool === t", arg=tool, timeout=10_000)


def select(page, township, *codes: str) -> None:
    """Click the first grid, shift-click the others, and wait until the server has them selected."""
    use(page, "select")
    for n, code in enumerate(codes):
        if n:
            page.keyboard.down("Shift")
        page.mouse.click(*at(page, *inside(township, code)))
        if n:
            page.keyboard.up("Shift")
        wait_state(page, "JSON.stringify(s.selected) === arg", json.dumps(list(codes[:n + 1]), separators=(",", ":")))


def wait_state(page, condition: str, arg=None) -> None:
    page.wait_for_function(f"(arg) => {{ const s = window.gridwatchPlan.lastState; return !!s && ({condition}); }}",
                           arg=arg, timeout=30_000)


@pytest.mark.browser
def test_select_merge_undo_a_problem_appears_and_goes_away(desk, township):
    page, _ = desk
    a, b = neighbours(township)
    select(page, township, a, b)
    assert f"households above {a}" not in problems(page)
    page.click("#plan-merge")
    wait_state(page, "!s.grids.some(g => g.code === arg)", b)
    assert f"households above {a}" in problems(page)  # two grids' households in one
    page.click("#plan-undo")
    wait_state(page, "s.grids.some(g => g.code === arg)", b)
    assert f"households above {a}" not in problems(page)


@pytest.mark.browser
def test_grid_workers_are_set_and_staffing_is_checked(desk, township):
    page, _ = desk
    a, _ = neighbours(township)
    select(page, township, a)
    page.fill("#plan-workers", "0")
    page.click("#plan-set-workers")
    page.wait_for_function("(a) => document.querySelector('#plan-problems').innerText.includes('workers below ' + a)",
                           arg=a)
    page.click("#plan-undo")
    page.wait_for_function("(a) => !document.querySelector('#plan-problems').innerText.includes('workers below ' + a)",
                           arg=a)


@pytest.mark.browser
def test_paint_gives_faces_to_the_chosen_grid(desk, township):
    page, _ = desk
    a, b = neighbours(township)
    select(page, township, a)  # the selected grid is the one a brush gives to
    page.wait_for_function("(a) => document.querySelector('#plan-target').innerText.includes(a)", arg=a)
    before = page.evaluate(STATE)["assign"]
    use(page, "paint")
    page.evaluate("() => { window.gridwatchPlan.feedbackMs.length = 0; }")
    start, end = at(page, *inside(township, a)), at(page, *inside(township, b))
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move(*end, steps=12)
    page.mouse.up()
    wait_state(page, "Object.keys(s.assign).filter(f => s.assign[f] === arg[0]).length > arg[1]",
               [a, sum(g == a for g in before.values())])
    after = page.evaluate(STATE)["assign"]
    moved = {f for f in after if after[f] != before[f]}
    assert moved and {after[f] for f in moved} == {a} and {before[f] for f in moved} <= {b}
    assert page.evaluate("() => window.gridwatchPlan.feedbackMs.length") > 0  # recoloured before the answer
    page.click("#plan-undo")
    wait_state(page, "JSON.stringify(s.assign) === arg", json.dumps(before, separators=(",", ":")))


@pytest.mark.browser
def test_split_by_a_drawn_line_makes_a_new_grid_and_undo_takes_it_back(desk, township):
    page, _ = desk
    a, _ = neighbours(township)
    shape = grid_geometries(township, [a]).iloc[0]
    west, south, east, north = shape.bounds
    middle = shape.representative_point().y
    select(page, township, a)
    count = len(grids_listed(page))
    use(page, "split")
    start, end = at(page, west - 0.002, middle), at(page, east + 0.002, middle)
    page.mouse.click(*start)
    page.mouse.move(*end, steps=5)
    page.mouse.click(*end)
    page.wait_for_timeout(100)
    page.mouse.click(*end)  # a second click on the last point finishes the line
    wait_state(page, "s.grids.length === arg", count + 1)
    page.click("#plan-undo")
    wait_state(page, "s.grids.length === arg", count)


def test_a_viewer_or_dispatcher_calling_a_planner_callback_is_refused(region, db_url, township):
    app = create_app(db_url)
    a, b = neighbours(township)
    planner = client_of(app, new_account(region, "planner"))
    planner.get("/plan")  # Dash takes the pages' callbacks at the first request
    body = callback_body(app, "pages.plan.act", {
        "plan-township.value": "T0", "plan-edit.data": {"seq": 1, "op": "paint", "grid": a, "faces": [1, 2, 3]}})
    with region.connect() as conn:
        drafts = conn.execute(sa.text("SELECT count(*) FROM plan_draft")).scalar()
    for role in ("viewer", "dispatcher"):
        response = client_of(app, new_account(region, role)).post("/_dash-update-component", json=body,
                                                                  headers={"Origin": ORIGIN})
        assert response.status_code == 403 and response.get_json() == {"error": "not allowed for your role"}
        assert client_of(app, new_account(region, role)).get("/plan/faces.geojson?township=T0").status_code == 403
    with region.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM plan_draft")).scalar() == drafts


@pytest.mark.browser
def test_a_proposal_balances_the_township_and_becomes_the_draft(desk):
    page, _ = desk
    assert "households" in problems(page)  # the township starts out of balance
    page.click("#plan-propose")
    page.wait_for_function("() => document.querySelector('#plan-job').innerText.includes('proposal meets')",
                           timeout=60_000)
    page.wait_for_function("() => !document.querySelector('#plan-problems').innerText.includes('households')",
                           timeout=30_000)
    assert "population" not in problems(page)
    page.click("#plan-undo")  # the proposal was one edit
    page.wait_for_function("() => document.querySelector('#plan-problems').innerText.includes('households')",
                           timeout=30_000)


@pytest.mark.browser
def test_save_compare_export_publish_and_import_from_the_page(desk, region, township, tmp_path):
    page, _ = desk
    a, b = neighbours(township)
    select(page, township, a, b)
    page.click("#plan-merge")
    wait_state(page, "!s.grids.some(g => g.code === arg)", b)
    page.fill("#plan-note", "merge two grids")
    page.click("#plan-save")
    page.wait_for_function("() => document.querySelector('#plan-saved').innerText.startsWith('saved as version')")
    version = int(page.inner_text("#plan-saved").rsplit(" ", 1)[1])
    page.locator("#plan-diff-a").click()
    page.get_by_role("option", name="v1", exact=True).click()
    page.locator("#plan-diff-b").click()
    page.get_by_role("option", name=f"v{version}", exact=True).click()
    page.wait_for_function("(b) => document.querySelector('#plan-diff').innerText.includes(b)", arg=b)
    assert "gone" in page.inner_text("#plan-diff")
    with page.expect_download() as download:
        page.click("#plan-export")  # version A (v1), GeoPackage in CGCS2000
    path = tmp_path / download.value.suggested_filename
    download.value.save_as(path)
    exported = pyogrio.read_dataframe(path)
    assert path.name == "grids-T0-v1.gpkg" and len(exported) == 16 and exported.crs.to_epsg() == 4490
    page.click("#plan-versions button >> nth=0")
    page.wait_for_function("() => document.querySelector('#plan-saved').innerText.startsWith('published')")
    with region.connect() as conn:
        codes = set(conn.execute(sa.text("SELECT code FROM grid WHERE version = :v"), {"v": version}).scalars())
        actions = conn.execute(sa.text("SELECT action FROM audit_log WHERE action LIKE 'plan.%' ORDER BY id")).scalars()
        assert list(actions)[-2:] == ["plan.save", "plan.publish"]
    assert b not in codes and a in codes

    page.set_input_files("#plan-upload input[type=file]", str(path))  # v1 back, as the draft
    page.wait_for_function("() => document.querySelector('#plan-saved').innerText.includes('drafts of T0')")
    wait_state(page, "s.grids.some(g => g.code === arg)", b)
