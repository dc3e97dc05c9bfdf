"""The wall as a watch floor reads it, in headless Chromium, offline: it fits every screen from
1366x768 to 3840x2160 unscrolled with marks sized to the screen, its legend is the map's paint, its clock runs, its tooltips
speak in words and a callsign search flies to the unit.
"""
from __future__ import annotations

import json
import re
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from gridwatch.bench._harness import new_account
from gridwatch.dashboard.app import create_app
from gridwatch.data.synthetic import REGIONS, make_region
from gridwatch.settings import get_settings

from _browser import MAP, READY, offline_page, serving
from _refdata import empty_tables

pytestmark = pytest.mark.browser

SCREENS = [(1366, 768), (1920, 1080), (3840, 2160)]
UNITS = "document.querySelector('#wall-map .js-plotly-plot').data.find(t => t.name === 'units')"
# Legend keys that share a colour because they mean the same thing.
SAME_MEANING = {"patrolled": "fresh"}


@pytest.fixture(scope="module")
def region(engine):
    empty_tables(engine)
    make_region(engine, REGIONS["small"])
    with engine.begin() as conn:  # one unit silent, one responding: every unit class is on the map
        conn.execute(sa.text("UPDATE unit_latest SET ts = now() - interval '1 hour' WHERE unit_id = 3"))
        conn.execute(sa.text("UPDATE unit SET status = 'responding' WHERE id = 4"))
    return engine


@pytest.fixture(scope="module")
def base(region, db_url):
    with serving(create_app(db_url).server) as url:
        yield url


def _open(page, base: str, path: str = "/wall") -> None:
    page.goto(f"{base}{path}")
    page.wait_for_function(READY, timeout=60_000)
    page.wait_for_function("() => document.querySelectorAll('#wall-kpis .kpi').length === 6")
    page.wait_for_function(f"() => ({UNITS})?.lon.length > 0", timeout=15_000)


@pytest.mark.parametrize("size", SCREENS, ids=[f"{w}x{h}" for w, h in SCREENS])
def test_the_wall_fits_the_screen_unscrolled(base, region, size, artifacts):
    width, height = size
    with offline_page(base, account=new_account(region), viewport=size) as (page, watch):
        _open(page, base)
        # marks grow with the screen as its text does: twice their 1080-line size on a 4K wall
        scale = max(1.0, min(height / 1080, width / 1920))
        page.wait_for_function(f"(k) => ({UNITS}).marker.size === 13 * k", arg=scale, timeout=30_000)
        page.wait_for_function(f"(k) => {MAP}?.getPaintProperty('incidents-dot', 'circle-stroke-width') === 1.5 * k",
                               arg=scale, timeout=30_000)
        page.screenshot(path=str(artifacts / f"wall-{width}x{height}.png"))
        box = page.evaluate("""() => {
            const r = (el) => { const b = el.getBoundingClientRect(); return [b.left, b.top, b.right, b.bottom]; };
            const side = document.querySelector('.side'), numeral = document.querySelector('.kpi-value');
            return {
                scroll: [document.documentElement.scrollWidth, document.documentElement.scrollHeight,
                         document.body.scrollWidth, document.body.scrollHeight],
                legend: r(document.getElementById('wall-legend')),
                kpis: [...document.querySelectorAll('#wall-kpis .kpi')].map(r),
                kpiClipped: [...document.querySelectorAll('#wall-kpis .kpi')].some(k => k.scrollHeight > k.clientHeight + 1),
                sideClipped: side.scrollHeight > side.clientHeight + 1,
                clock: r(document.getElementById('wall-clock')),
                numeral: parseFloat(getComputedStyle(numeral).fontSize),
                title: parseFloat(getComputedStyle(document.querySelector('.kpi-title')).fontSize),
            };
        }""")
        assert not watch.offsite, watch.offsite
    assert box["scroll"] == [width, height, width, height]  # nothing to scroll
    for left, top, right, bottom in [box["legend"], box["clock"], *box["kpis"]]:
        assert left >= 0 and top >= 0 and right <= width and bottom <= height, box
    assert not box["sideClipped"] and not box["kpiClipped"], box  # the whole legend shows, and every card
    assert box["numeral"] >= 0.055 * height and box["title"] >= 0.02 * height, box  # sizes follow the screen


def _rgb(colour: str) -> tuple[int, int, int]:
    """A CSS colour (#rrggbb or rgb()/rgba()) as its red, green and blue."""
    if colour.startswith("#"):
        return tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]
    return tuple(int(float(v)) for v in re.findall(r"[\d.]+", colour)[:3])  # type: ignore[return-value]


def _paint(value, props: dict):
    """The value a MapLibre paint takes for a feature with ``props``: a constant, a ``match`` on a property,
    or a ``case`` of property equalities over those."""
    if isinstance(value, list) and value[0] == "match":
        _, (_get, prop), *pairs = value
        default, pairs = pairs[-1], pairs[:-1]
        return _paint(next((out for key, out in zip(pairs[::2], pairs[1::2]) if key == props.get(prop)), default),
                      props)
    if isinstance(value, list) and value[0] == "case":
        *branches, default = value[1:]
        for (op, (_get, prop), wanted), out in zip(branches[::2], branches[1::2]):
            assert op == "==", f"legend keys only equality cases, not {op}"
            if props.get(prop) == wanted:
                return _paint(out, props)
        return _paint(default, props)
    assert isinstance(value, str), f"legend keys only constant, match or case paint, not {value}"
    return value


@pytest.fixture(scope="module")
def wall(base, region):
    with offline_page(base, account=new_account(region)) as (page, watch):
        _open(page, base)
        yield page
    assert not watch.offsite, watch.offsite
    assert not watch.console_errors, watch.console_errors


def test_every_legend_key_is_the_paint_of_the_map(wall):
    page = wall
    keys = page.evaluate("""() => [...document.querySelectorAll('#wall-legend .key')].map(k => ({
        layer: k.dataset.styleLayer, paint: k.dataset.paint, prop: k.dataset.prop, value: k.dataset.value,
        unit: k.dataset.unitClass, colour: getComputedStyle(k).backgroundColor,
        label: k.parentElement.textContent.trim()}))""")
    style = {layer["id"]: layer for layer in page.evaluate(f"() => {MAP}.getStyle().layers")}
    catalogued = [k for k in keys if k["layer"]]
    assert {k["layer"] for k in catalogued} >= {"grids-fill", "segments-line", "lines-line1", "incidents-dot"}
    for key in catalogued:
        props = {key["prop"]: json.loads(key["value"])} if key["prop"] else {}
        assert _rgb(key["colour"]) == _rgb(_paint(style[key["layer"]]["paint"][key["paint"]], props)), key
    # the units: every marker on the map has the colour of its class's key
    swatch = {k["unit"]: _rgb(k["colour"]) for k in keys if k["unit"] and k["unit"] != "responding"}
    units = page.evaluate(f"() => ({UNITS})")
    classes = [c[1] for c in units["customdata"]]
    assert "silent" in classes and len(set(classes)) >= 3
    assert [_rgb(c) for c in units["marker"]["color"]] == [swatch[c] for c in classes]
    # one colour, one meaning: no two keys of different meaning share a fill
    meanings: dict[tuple, set[str]] = {}
    for key in keys:
        if key["colour"] not in ("rgba(0, 0, 0, 0)", "transparent"):
            meanings.setdefault(_rgb(key["colour"]), set()).add(key["label"])
    assert all(len({SAME_MEANING.get(m, m) for m in labels}) == 1 for labels in meanings.values()), meanings
    legend = page.locator("#wall-legend").inner_text()
    assert f"no visit in the last {get_settings().coverage_lookback_h:g} h" in legend
    assert "never" not in legend


def test_the_clock_runs_in_the_site_zone_and_the_picture_says_its_age(wall):
    page = wall
    first = page.locator("#wall-clock-time").inner_text()
    page.wait_for_function("(t) => document.querySelector('#wall-clock-time').textContent !== t", arg=first,
                           timeout=5_000)
    shown = datetime.strptime(page.locator("#wall-clock-time").inner_text(), "%H:%M:%S")
    now = datetime.now(ZoneInfo(get_settings().timezone))
    off = (now - now.replace(hour=shown.hour, minute=shown.minute, second=shown.second)).total_seconds()
    assert min(off % 86400, -off % 86400) <= 3, (shown, now)  # the site's time, not the machine's UTC
    assert re.fullmatch(r"updated \d+ s ago", page.locator("#wall-updated").inner_text())


def test_a_unit_tooltip_names_callsign_kind_status_speed_and_fix_age(wall):
    page = wall
    point = page.evaluate(f"""() => {{
        const u = {UNITS}, i = u.customdata.findIndex(c => c[1] === 'silent'), m = {MAP};
        const p = m.project([u.lon[i], u.lat[i]]), r = m.getCanvas().getBoundingClientRect();
        return {{x: r.left + p.x, y: r.top + p.y, callsign: u.customdata[i][0]}};
    }}""")
    page.mouse.move(point["x"], point["y"])
    page.wait_for_selector("#wall-map .hoverlayer .hovertext", timeout=5_000)
    text = page.locator("#wall-map .hoverlayer .hovertext").text_content()
    assert point["callsign"] in text and "silent" in text and re.search(r"(\d+ km/h|speed —)", text), text
    assert re.search(r"fix \d+ (s|min|h) ago", text) and re.search(r"(foot|vehicle|drone|post|checkpoint)", text), text


def test_a_place_hover_reads_name_zone_last_visit_and_overdue_by(wall):
    page = wall
    point = page.evaluate(f"""() => {{
        const m = {MAP}, r = m.getCanvas().getBoundingClientRect();
        const ids = m.getStyle().layers.filter(l => l.metadata && l.metadata['gridwatch:layer']
            && m.getLayoutProperty(l.id, 'visibility') !== 'none').map(l => l.id);
        for (let y = 0.2; y < 0.9; y += 0.02) for (let x = 0.2; x < 0.9; x += 0.02) {{
            const p = [x * r.width, y * r.height], hit = m.queryRenderedFeatures(p, {{layers: ids}})[0];
            // a grid coverage has judged (one with no coverage row yet has no zone limit to name)
            if (hit && hit.layer.id === 'grids-fill' && hit.properties.limit_h != null)
                return {{x: r.left + p[0], y: r.top + p[1]}};
        }}
        return null;
    }}""")
    assert point is not None
    page.mouse.move(point["x"], point["y"])
    page.wait_for_function("() => document.querySelector('#wall-hover').textContent.includes('Zone')")
    text = page.locator("#wall-hover").inner_text()
    for label in ("Name:", "Zone:", "Last visit:", "Overdue by:"):
        assert label in text, text
    assert not re.search(r"last_visit|limit_h|status:", text), text  # human labels, not field names
    assert re.search(r"(border closed zone|port control zone|social surface)", text), text


def test_a_callsign_search_flies_to_the_unit_and_rings_it(wall):
    page = wall
    unit = page.evaluate(f"() => {{ const u = {UNITS}; return {{callsign: u.customdata[1][0], lon: u.lon[1], lat: u.lat[1]}}; }}")
    page.locator("#wall-find").click()
    page.keyboard.type(unit["callsign"])
    # the option of exactly that callsign (another may contain it), once the list has it
    exact = re.compile(f"^\\s*{re.escape(unit['callsign'])}\\s*$")
    page.locator(".dash-dropdown-option").filter(has_text=exact).first.click(timeout=30_000)
    page.wait_for_function(
        "(u) => { const c = " + MAP + ".getCenter(); return Math.abs(c.lng - u.lon) < 1e-3 && "
        "Math.abs(c.lat - u.lat) < 1e-3 && " + MAP + ".getZoom() >= 12.5; }", arg=unit, timeout=30_000)
    page.wait_for_function(
        "(u) => { const f = document.querySelector('#wall-map .js-plotly-plot').data.find(t => t.name === 'found');"
        " return f.lon.length === 1 && Math.abs(f.lon[0] - u.lon) < 1e-3; }", arg=unit, timeout=30_000)
    assert unit["callsign"] in page.locator("#wall-find").inner_text()
