"""Accounts, roles and the access table, on the real app against PostGIS: every route, page and
callback has an entry; anonymous requests and each role get exactly what the table says; writes are
the signed-in account's and audited; sessions end; cross-origin writes and password guessing are
refused; kiosk links work and are revoked; accounts see their own command unit only.
"""
from __future__ import annotations

import functools
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from _accounts import ORIGIN, client_of

from gridwatch.bench._harness import callback_body, dependency_key, new_account
from gridwatch.dashboard.access import CALLBACKS, PAGES, RECHECK_S, ROUTES, callback_id, rank
from gridwatch.dashboard.app import create_app
from gridwatch.etl.accounts import add_kiosk, revoke_kiosk, set_password
from gridwatch.settings import ROLES, get_settings

from _browser import READY, offline_page, serving
from _refdata import seed_region

# A request for every route of the URL map (the test fails when a route has none).
SAMPLES: dict[str, str] = {
    "/login": "/login",
    "/kiosk/<token>": "/kiosk/not-a-token",
    "/": "/",
    "/<path:path>": "/wall",
    "/_dash-layout": "/_dash-layout",
    "/_dash-dependencies": "/_dash-dependencies",
    "/_dash-update-component": "/_dash-update-component",
    "/_dash-component-suites/<string:package_name>/<path:fingerprinted_path>":
        "/_dash-component-suites/dash/dcc/async-graph.js",
    "/_dash-component-suites/plotly/package_data/plotly.min.js": "/_dash-component-suites/plotly/package_data/plotly.min.js",
    "/_reload-hash": "/_reload-hash",
    "/_favicon.ico": "/_favicon.ico",
    "/assets/<path:filename>": "/assets/wall.css",
    "/static/<path:filename>": "/static/nothing.css",
    "/style.json": "/style.json",
    "/tiles/<layer_id>/<z>/<x>/<y>.pbf": "/tiles/grids/10/796/447.pbf",
    "/tiles/group/<group>/<z>/<x>/<y>.pbf": "/tiles/group/static/10/796/447.pbf",
    "/glyphs/<fontstack>/<int:start>-<int:end>.pbf": "/glyphs/gridwatch-sans/0-255.pbf",
    "/api/live": "/api/live",
    "/plan/static/<name>": "/plan/static/plan-map.css",
    "/plan/faces.geojson": "/plan/faces.geojson?township=T",
    "/logout": "/logout",  # last: it signs the client out
}
SECOND_COUNTY = """
INSERT INTO command_unit (id, level, parent_id, code, name, geom)
SELECT 5, 'county', 1, 'C2', 'County 2', geom FROM command_unit WHERE code = 'P';
INSERT INTO unit (id, callsign, kind, command_unit_id) VALUES (3, 'V2', 'vehicle', 5);
UPDATE unit SET status = 'on_duty';
INSERT INTO unit_latest (unit_id, ts, geom, source)
SELECT id, now() - make_interval(hours => CASE WHEN id = 1 THEN 1 ELSE 0 END),  -- F1 is silent: an alert
       ST_SetSRID(ST_MakePoint(100.05, 22.1), 4326), 'osmand' FROM unit;
INSERT INTO alert (kind, subject, severity, raised_at, detail)
VALUES ('unit_silent', '1', 2, now(), '{"callsign": "F1", "lon": 100.05, "lat": 22.1}');
"""


@pytest.fixture(scope="module")
def region(engine: sa.Engine) -> sa.Engine:
    from _refdata import empty_tables

    empty_tables(engine)
    seed_region(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql(SECOND_COUNTY)
    return engine


@pytest.fixture(scope="module")
def app(region: sa.Engine, db_url: str):
    app = create_app(db_url)
    app.server.test_client().get("/login")  # Dash registers its page router at the first request
    return app


@pytest.fixture(scope="module")
def accounts(region: sa.Engine) -> dict[str, tuple[str, str]]:
    """One account of each role, of the top command unit."""
    return {role: new_account(region, role) for role in ROLES}


def server_callbacks(app) -> dict[str, str]:
    """Output key -> callback id of every callback that runs on the server."""
    return {output: callback_id(entry["callback"]) for output, entry in app.callback_map.items() if "callback" in entry}


def crafted(app, name: str) -> dict:
    """A ``_dash-update-component`` body for the callback ``name``, shaped as the page sends it, values unset."""
    return callback_body(app, name)


def test_every_route_page_and_callback_has_an_entry(app) -> None:
    rules = {rule.rule for rule in app.server.url_map.iter_rules()}
    assert rules - set(ROUTES) == set(), "routes without an entry in ROUTES"
    assert rules - set(SAMPLES) == set(), "routes without a sample request in this test"
    assert set(server_callbacks(app).values()) - set(CALLBACKS) == set(), "callbacks without an entry in CALLBACKS"
    import dash

    assert {page["path"] for page in dash.page_registry.values()} - set(PAGES) == set()


@pytest.mark.parametrize("role", [None, *ROLES])
def test_each_route_answers_as_the_table_says(app, accounts, role: str | None) -> None:
    client = client_of(app, accounts[role] if role else None)
    for rule, path in SAMPLES.items():
        entry = ROUTES[rule]
        if rule == "/_dash-update-component":
            response = client.post(path, json=_pathname_body(app, "/wall"), headers={"Origin": ORIGIN})
        else:
            response = client.get(path)
        status = response.status_code
        if entry.least is None:  # its own answer (a forged kiosk token is 401)
            assert status < 500, (rule, role, status)
        elif role is not None and rank(role) >= rank(entry.least):
            assert status not in (401, 403) and status < 500, (rule, role, status)
        elif role is not None:  # signed in, below the route's role
            assert status == 403, (rule, role, status)
        elif entry.page:
            assert status == 303 and response.headers["Location"].startswith("/login?next="), (rule, status)
        else:
            assert status == 401 and response.get_json() == {"error": "sign in first"}, (rule, status)


@pytest.mark.parametrize("role", ROLES)
def test_each_callback_runs_for_the_roles_the_table_names(app, accounts, role: str) -> None:
    client = client_of(app, accounts[role])
    for name, least in CALLBACKS.items():
        if name == "dash.dash.update":
            continue
        response = client.post("/_dash-update-component", json=crafted(app, name), headers={"Origin": ORIGIN})
        if rank(role) >= rank(least):
            assert response.status_code != 403, (name, role)
        else:
            assert response.status_code == 403 and response.get_json() == {"error": "not allowed for your role"}


def test_a_callback_not_on_the_server_or_unknown_is_refused(app, accounts) -> None:
    client = client_of(app, accounts["admin"])
    clientside = next(k for k, v in app.callback_map.items() if "callback" not in v)
    for output in (clientside, "no-such.children", None):
        response = client.post("/_dash-update-component", json={"output": output}, headers={"Origin": ORIGIN})
        assert response.status_code == 400


# Values no page sends, for any input or state.
HOSTILE_VALUES = (0, -1, 1e308, "x", "\x00", "A" * 5000, [1, "a"], {"a": {"b": 1}}, True)


def test_a_hand_made_callback_request_is_refused_with_one_log_line(app, accounts, caplog) -> None:
    """Bodies not shaped as their callback's, and any value in any input or state, end in a 4xx
    (the page's own requests are the browser tests'), never in a 500 with a logged traceback."""
    client = client_of(app, accounts["admin"])
    for page in ("/wall", "/dispatch", "/plan"):
        client.get(page)
    post = functools.partial(client.post, "/_dash-update-component", headers={"Origin": ORIGIN})
    refused = 0
    for name in set(server_callbacks(app).values()):
        good = callback_body(app, name)
        for wrong in ({"inputs": "x"}, {"inputs": good["inputs"][1:]}, {"state": [1] + good["state"]},
                      {"outputs": 3}, {"changedPropIds": [1]}):
            response = post(json={**good, **wrong})
            assert response.status_code == 400, (name, wrong, response.status_code)
            assert response.get_json() == {"error": "no such callback, or a request not shaped as its own"}
        plain = [d for d in app.callback_map[good["output"]]["inputs"] + app.callback_map[good["output"]]["state"]
                 if not d["id"].startswith("{")]
        for dependency in plain:
            for value in HOSTILE_VALUES:
                status = post(json=callback_body(app, name, {dependency_key(dependency): value})).status_code
                assert status < 500, (name, dependency, value, status)
                refused += status == 400
    assert refused > 0  # some values do reach a callback that cannot use them
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR], caplog.text[:2000]
    warnings = [r for r in caplog.records if r.name == "gridwatch.dashboard.access"]
    assert len(warnings) == refused and all("\n" not in r.getMessage() for r in warnings)


def _pathname_body(app, path: str) -> dict:
    output = next(key for key, cid in server_callbacks(app).items() if cid == "dash.dash.update")
    return {"output": output, "changedPropIds": ["_pages_location.pathname"], "state": [],
            "outputs": [{"id": "_pages_content", "property": "children"}, {"id": "_pages_store", "property": "data"}],
            "inputs": [{"id": "_pages_location", "property": "pathname", "value": path},
                       {"id": "_pages_location", "property": "search", "value": ""}]}


def test_the_page_router_checks_the_page_it_renders(app, accounts, monkeypatch) -> None:
    monkeypatch.setitem(PAGES, "/dispatch", "dispatcher")
    viewer, dispatcher = client_of(app, accounts["viewer"]), client_of(app, accounts["dispatcher"])
    assert viewer.get("/dispatch").status_code == 403
    body = _pathname_body(app, "/dispatch")
    assert viewer.post("/_dash-update-component", json=body, headers={"Origin": ORIGIN}).status_code == 403
    answer = dispatcher.post("/_dash-update-component", json=body, headers={"Origin": ORIGIN})
    assert answer.status_code == 200, answer.data[:500]


def _acknowledge_body(app, alert_id: int) -> dict:
    body = crafted(app, "pages.dispatch.acknowledge")
    prop = json.dumps({"id": alert_id, "type": "dispatch-ack"}, separators=(",", ":")) + ".n_clicks"
    body.update(outputs={"id": "dispatch-acked", "property": "data"}, changedPropIds=[prop],
                inputs=[[{"id": {"id": alert_id, "type": "dispatch-ack"}, "property": "n_clicks", "value": 1}]])
    return body


def test_a_crafted_acknowledgement_from_a_viewer_is_refused_and_changes_nothing(app, region, accounts) -> None:
    with region.connect() as conn:
        alert_id = conn.execute(sa.text("SELECT id FROM alert WHERE acknowledged_at IS NULL LIMIT 1")).scalar()
    response = client_of(app, accounts["viewer"]).post("/_dash-update-component", json=_acknowledge_body(app, alert_id),
                                                       headers={"Origin": ORIGIN})
    assert response.status_code == 403
    with region.connect() as conn:
        assert conn.execute(sa.text("SELECT acknowledged_by FROM alert WHERE id = :id"), {"id": alert_id}).scalar() is None
    response = client_of(app, accounts["dispatcher"], address="10.1.2.3").post(
        "/_dash-update-component", json=_acknowledge_body(app, alert_id), headers={"Origin": ORIGIN})
    assert response.status_code == 200, response.data[:300]
    with region.connect() as conn:
        who = conn.execute(sa.text("SELECT acknowledged_by FROM alert WHERE id = :id"), {"id": alert_id}).scalar()
        audited = conn.execute(sa.text("SELECT actor, address FROM audit_log WHERE action = 'alert_acknowledged' "
                                       "AND detail->>'alert' = :id AND actor = :name"),
                               {"id": str(alert_id), "name": accounts["dispatcher"][0]}).one()
    assert who == accounts["dispatcher"][0]
    assert tuple(audited) == (accounts["dispatcher"][0], "10.1.2.3")


def test_cross_origin_and_originless_writes_are_refused(app, accounts) -> None:
    client = client_of(app, accounts["dispatcher"])
    body = crafted(app, "pages.wall.refresh_slow")
    for headers in ({"Origin": "http://evil.example"}, {"Referer": "http://evil.example/page"}, {},
                    {"Origin": "null"}, {"Origin": "https://localhost"}):
        response = client.post("/_dash-update-component", json=body, headers=headers)
        assert response.status_code == 403 and response.get_json() == {"error": "cross-origin request refused"}
    name, password = accounts["viewer"]
    response = app.server.test_client().post("/login", data={"name": name, "password": password},
                                             headers={"Origin": "http://evil.example"})
    assert response.status_code == 403


def test_sign_in_is_audited_and_sessions_end_on_logout(app, region, accounts) -> None:
    name, password = accounts["viewer"]
    client = client_of(app, None, address="10.9.9.9")
    wrong = client.post("/login", data={"name": name, "password": "not the password"}, headers={"Origin": ORIGIN})
    assert wrong.status_code == 401 and b"Wrong name or password" in wrong.data
    good = client.post("/login", data={"name": name, "password": password, "next": "/dispatch?lang=zh"},
                       headers={"Origin": ORIGIN})
    assert (good.status_code, good.headers["Location"]) == (303, "/dispatch?lang=zh")
    cookie = good.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and password not in cookie
    assert client.get("/api/live").status_code == 200
    assert client.get("/logout").status_code == 303
    assert client.get("/api/live").status_code == 401
    with region.connect() as conn:
        actions = conn.execute(sa.text("SELECT action FROM audit_log WHERE actor = :name AND address = '10.9.9.9' "
                                       "ORDER BY id"), {"name": name}).scalars().all()
    assert actions == ["sign_in_failed", "signed_in"]
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        again = client.post("/login", data={"name": name, "password": password, "next": target},
                            headers={"Origin": ORIGIN})
        assert again.headers["Location"] == "/"


def test_idle_and_old_sessions_end(app, accounts, db_url: str) -> None:
    client = client_of(app, accounts["viewer"])
    with client.session_transaction() as session:
        session["seen"] = time.time() - get_settings().session_idle_s - 1
    assert client.get("/api/live").status_code == 401
    short = create_app(db_url, get_settings().model_copy(update={"session_max_s": 1.0}))
    client = client_of(short, accounts["viewer"])
    assert client.get("/api/live").status_code == 200
    time.sleep(1.2)
    assert client.get("/api/live").status_code == 401  # busy all along, but the shift is over
    assert client.get("/wall").status_code == 303


def _refused_within(client, path: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if client.get(path).status_code == 401:
            return True
        time.sleep(0.25)
    return False


def test_a_new_password_ends_earlier_sessions(app, region) -> None:
    account = new_account(region, "dispatcher")
    client = client_of(app, account)
    assert client.get("/api/live").status_code == 200
    with region.begin() as conn:
        set_password(conn, account[0], "another long password", actor="test")
    assert _refused_within(client, "/api/live", RECHECK_S * 2)
    assert client_of(app, (account[0], "another long password")).get("/api/live").status_code == 200


def test_ten_wrong_passwords_slow_that_account_and_that_address(app, region) -> None:
    name, password = new_account(region, "viewer")
    guesser = client_of(app, None, address="10.7.7.7")
    codes = [guesser.post("/login", data={"name": name, "password": f"guess {i}"}, headers={"Origin": ORIGIN}).status_code
             for i in range(12)]
    assert codes == [401] * 10 + [429] * 2
    right = guesser.post("/login", data={"name": name, "password": password}, headers={"Origin": ORIGIN})
    assert right.status_code == 429 and "Retry-After" in right.headers  # even the right password waits
    other = new_account(region, "viewer")
    assert guesser.post("/login", data={"name": other[0], "password": other[1]},
                        headers={"Origin": ORIGIN}).status_code == 429  # that address
    elsewhere = client_of(app, None, address="10.8.8.8")
    assert elsewhere.post("/login", data={"name": name, "password": password},
                          headers={"Origin": ORIGIN}).status_code == 429  # that account
    assert client_of(app, other, address="10.8.8.8").get("/api/live").status_code == 200


def test_a_kiosk_link_signs_a_wall_in_for_good_until_revoked(app, region) -> None:
    with region.begin() as conn:
        token = add_kiosk(conn, "hall-wall", unit="C", actor="test")
    wall = app.server.test_client()
    opened = wall.get(f"/kiosk/{token}")
    assert (opened.status_code, opened.headers["Location"]) == (303, "/wall?unit=C")
    assert "Expires=" in opened.headers["Set-Cookie"]  # kept across browser restarts
    with wall.session_transaction() as session:  # months later, no request for weeks: still signed in
        session["seen"] = time.time() - 90 * 86400
    assert wall.get("/api/live").status_code == 200
    assert app.server.test_client().get("/kiosk/forged-token").status_code == 401
    prober = client_of(app, None, address="10.6.6.6")  # guessing links: slowed as guessing passwords is
    assert [prober.get(f"/kiosk/guess-{i}").status_code for i in range(11)] == [401] * 10 + [429]
    assert prober.get(f"/kiosk/{token}").status_code == 429
    with region.begin() as conn:
        revoke_kiosk(conn, "hall-wall", actor="test")
    assert _refused_within(wall, "/api/live", RECHECK_S * 2)
    assert app.server.test_client().get(f"/kiosk/{token}").status_code == 401
    with region.connect() as conn:
        actions = conn.execute(sa.text("SELECT action FROM audit_log WHERE detail->>'kiosk' = 'hall-wall' ORDER BY id")
                               ).scalars().all()
    assert actions == ["kiosk_added", "kiosk_revoked"]


def test_an_account_sees_its_own_command_unit_only(app, region) -> None:
    county = client_of(app, new_account(region, "dispatcher", unit="C2"))
    assert [u["callsign"] for u in county.get("/api/live").get_json()] == ["V2"]
    assert [u["callsign"] for u in county.get("/api/live?unit=C").get_json()] == ["V2"]  # not its county
    top = client_of(app, new_account(region, "viewer"))
    assert sorted(u["callsign"] for u in top.get("/api/live").get_json()) == ["F1", "V1", "V2"]
    assert sorted(u["callsign"] for u in top.get("/api/live?unit=C").get_json()) == ["F1", "V1"]


def test_the_audit_log_is_append_only(region) -> None:
    with region.begin() as conn:
        conn.execute(sa.text("INSERT INTO audit_log (actor, action) VALUES ('test', 'probe')"))
    for statement in ("UPDATE audit_log SET actor = 'someone else'", "DELETE FROM audit_log", "TRUNCATE audit_log"):
        with pytest.raises(sa.exc.ProgrammingError, match="append-only"), region.begin() as conn:
            conn.execute(sa.text(statement))


def _gridwatch(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gridwatch.cli", *args], env=env, input=stdin, capture_output=True,
                          text=True, timeout=120)


def test_users_and_kiosk_commands(region, cli_env: dict[str, str]) -> None:
    added = _gridwatch(cli_env, "users", "add", "li.ming", "--role", "dispatcher", "--unit", "C",
                       stdin="a long enough password\n")
    assert added.returncode == 0 and added.stdout.strip() == "added li.ming: dispatcher of C", added.stderr
    assert "a long enough password" not in added.stdout + added.stderr
    listed = _gridwatch(cli_env, "users", "list").stdout
    assert "li.ming\tdispatcher\tC\t" in listed
    assert _gridwatch(cli_env, "users", "role", "li.ming", "planner").stdout.strip() == "li.ming: planner of C"
    assert _gridwatch(cli_env, "users", "passwd", "li.ming", stdin="another long password\n").returncode == 0
    for args, message in (
        (("users", "add", "li.ming", "--role", "viewer"), "there is already an account 'li.ming'"),
        (("users", "add", "wang", "--role", "viewer", "--unit", "NOPE"), "there is no command unit 'NOPE'"),
        (("users", "add", "zhao", "--role", "viewer"), "at least 12 characters"),
        (("users", "remove", "nobody"), "there is no account 'nobody'"),
    ):
        failed = _gridwatch(cli_env, *args, stdin="short\n" if args[2] == "zhao" else "a long enough password\n")
        assert failed.returncode == 1 and message in failed.stderr and failed.stderr.count("\n") == 1, failed.stderr
    assert _gridwatch(cli_env, "users", "remove", "li.ming").stdout.strip() == "removed li.ming"
    link = _gridwatch(cli_env, "kiosk", "add", "lobby", "--base-url", "https://wall.example").stdout.strip()
    assert link.startswith("https://wall.example/kiosk/") and len(link.rsplit("/", 1)[1]) >= 40
    assert "lobby\tP\tmade " in _gridwatch(cli_env, "kiosk", "list").stdout
    assert _gridwatch(cli_env, "kiosk", "revoke", "lobby").stdout.strip() == "revoked lobby"
    assert "revoked" in _gridwatch(cli_env, "kiosk", "list").stdout
    assert _gridwatch(cli_env, "devices", "add", "V2").returncode == 0
    assert _gridwatch(cli_env, "devices", "revoke", "V2").returncode == 0
    with region.connect() as conn:
        logged = conn.execute(sa.text(
            "SELECT action, detail->>'account', detail->>'kiosk', detail->'devices'->>0 FROM audit_log "
            "WHERE actor LIKE 'cli:%' AND at > now() - interval '10 minutes' ORDER BY id")).all()
    assert [tuple(row) for row in logged][-8:] == [
        ("account_added", "li.ming", None, None), ("role_set", "li.ming", None, None),
        ("password_set", "li.ming", None, None), ("account_removed", "li.ming", None, None),
        ("kiosk_added", None, "lobby", None), ("kiosk_revoked", None, "lobby", None),
        ("device_tokens_issued", None, None, "V2"), ("devices_revoked", None, None, "V2"),
    ]


def test_a_session_key_file_readable_by_others_is_refused(region, db_url: str, tmp_path: Path) -> None:
    from gridwatch.errors import GridwatchError
    from gridwatch.settings import Settings

    settings = Settings(home=tmp_path, database_url=db_url)
    create_app(db_url, settings)
    key = tmp_path / "secret_key"
    assert key.stat().st_mode & 0o777 == 0o600
    key.chmod(0o644)
    with pytest.raises(GridwatchError, match="may be read by group or others .*: chmod 600"):
        create_app(db_url, settings)


@pytest.mark.browser
def test_in_chromium_a_viewer_signs_in_sees_the_wall_and_no_acknowledge_button(app, accounts) -> None:
    name, password = accounts["viewer"]
    with serving(app.server) as base, offline_page(base, account={"cookies": [], "origins": []}) as (page, watch):
        page.goto(f"{base}/wall?lang=en")
        assert page.url.startswith(f"{base}/login?next=/wall")
        page.fill("input[name=name]", name)
        page.fill("input[name=password]", password)
        page.click("button[type=submit]")
        page.wait_for_url(f"{base}/wall?lang=en")
        page.wait_for_function(READY, timeout=60_000)
        assert name in page.locator(".wall-header .who").text_content()
        page.goto(f"{base}/dispatch")
        page.wait_for_selector("#dispatch-alerts li.alert", timeout=30_000)
        assert page.locator("#dispatch-alerts button.ack").count() == 0
        page.click(".dispatch-header .who")  # sign out
        page.wait_for_url(f"{base}/login")
        assert page.context.request.get(f"{base}/api/live").status == 401
    assert not watch.console_errors and not watch.csp_violations, (watch.console_errors, watch.csp_violations)


def test_a_county_dispatcher_sees_and_acknowledges_the_alerts_of_its_county_only(app, region) -> None:
    from gridwatch.layers.alerts import alerts_at

    with region.begin() as conn:
        alert_id = conn.execute(sa.text(
            "INSERT INTO alert (kind, subject, severity, raised_at, detail) VALUES ('unit_out_of_area', '1', 2, "
            "now(), '{\"callsign\": \"F1\", \"lon\": 100.05, \"lat\": 22.1}') RETURNING id")).scalar()
    assert alert_id not in alerts_at(region, scope=5)["id"].tolist()  # C2: F1 is a unit of C
    assert alert_id in alerts_at(region, scope=2)["id"].tolist()
    other_county = client_of(app, new_account(region, "dispatcher", unit="C2"))
    response = other_county.post("/_dash-update-component", json=_acknowledge_body(app, alert_id),
                                 headers={"Origin": ORIGIN})
    assert response.get_json()["response"] == {}  # nothing to update: the alert is not its own
    with region.connect() as conn:
        assert conn.execute(sa.text("SELECT acknowledged_by FROM alert WHERE id = :id"), {"id": alert_id}).scalar() is None
