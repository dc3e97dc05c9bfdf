"""``gridwatch bench access``: what signing in and the access checks cost.

- Sign-in: p95 of ``POST /login`` with the right password, over HTTP to the served app (argon2id
  at argon2-cffi's recommended cost, the audit row, the session cookie); baseline: the argon2
  verification alone, measured in turn with the sign-ins so that both see the same machine.
- Authorization: p95 of what a request of a signed-in viewer pays before its own handler runs:
  opening the signed session cookie and every before-request hook (the session's principal, the
  table lookup, Dash's own hooks; for a callback also reading its JSON body and finding the
  callback), for a tile and for a callback request; baseline: the whole tile request (and the
  whole callback request) of the same viewer through the Flask test client.
"""
from __future__ import annotations

import time
import urllib.parse
import urllib.request

from gridwatch.bench import Figure
from gridwatch.bench._harness import callback_body, p95_ms, timed
from gridwatch.settings import Settings

__all__ = ["bench_access"]

SIGN_INS = 40
WARM_UP = 5
CHECKS = 2000
REQUESTS = 200
TILE = "/tiles/group/static/10/796/447.pbf"


def bench_access(settings: Settings, *, scale: str) -> list[Figure]:
    """Sign-in and authorization costs on a synthetic region of ``scale``."""
    from gridwatch.bench._harness import bench_engine, new_account, serving
    from gridwatch.dashboard.app import create_app
    from gridwatch.data.synthetic import REGIONS, make_region
    from gridwatch.etl.accounts import HASHER
    from gridwatch.layers.glyphs import glyph_range

    with bench_engine(settings) as engine:
        make_region(engine, REGIONS[scale])
        app = create_app(engine.url.render_as_string(hide_password=False), settings)
        name, password = new_account(engine, "viewer")
        with serving(app.server) as base:
            form = urllib.parse.urlencode({"name": name, "password": password}).encode()

            def sign_in() -> None:
                request = urllib.request.Request(f"{base}/login", data=form, headers={"Origin": base})
                with _no_redirects().open(request, timeout=30) as response:
                    assert response.status == 303, response.status

            stored = HASHER.hash(password)
            glyph_range(0)  # what the app renders in the background when it starts
            for _ in range(WARM_UP):  # the app's first requests set it up
                sign_in()
            logins, verify = [], []
            for _ in range(SIGN_INS):
                logins += timed(sign_in, 1)
                verify += timed(lambda: HASHER.verify(stored, password), 1)

        client = app.server.test_client()
        client.post("/login", data={"name": name, "password": password}, headers={"Origin": "http://localhost"})
        cookie = f"gridwatch_session={client.get_cookie('gridwatch_session').value}"
        callback = _callback_body(app, client)

        def checks(path: str, **kwargs) -> list[float]:
            times = []
            for _ in range(CHECKS):
                request = app.server.test_request_context(
                    path, headers={"Cookie": cookie, "Origin": "http://localhost"}, **kwargs)
                start = time.perf_counter()
                with request:  # opens the session
                    assert app.server.preprocess_request() is None
                times.append(time.perf_counter() - start)
            return times

        tile_checks = checks(TILE)
        callback_checks = checks("/_dash-update-component", method="POST", json=callback)
        tiles = timed(lambda: client.get(TILE), REQUESTS)

        def refresh() -> None:
            answer = client.post("/_dash-update-component", json=callback, headers={"Origin": "http://localhost"})
            assert answer.status_code == 200, (answer.status_code, answer.get_data(as_text=True)[:200])

        callbacks = timed(refresh, REQUESTS)
    return [
        Figure(f"sign-in p95 ({SIGN_INS} over HTTP)", p95_ms(logins), "ms", "<= 300", p95_ms(verify),
               "argon2 verify alone"),
        Figure(f"authorization of a tile request p95 ({CHECKS})", p95_ms(tile_checks), "ms", "<= 2",
               p95_ms(tiles), "whole tile request"),
        Figure(f"authorization of a callback p95 ({CHECKS})", p95_ms(callback_checks), "ms", "<= 5",
               p95_ms(callbacks), "whole callback request"),
    ]


def _no_redirects() -> urllib.request.OpenerDirector:
    """An opener that hands back every answer as it came (a redirect is not followed)."""
    class Keep(urllib.request.HTTPErrorProcessor):
        def http_response(self, request, response):  # noqa: ANN001
            return response

    return urllib.request.build_opener(Keep)


def _callback_body(app, client) -> dict:
    """The wall's live refresh callback as the page sends it: the refresh due, the language English,
    the rest unset."""
    client.get("/wall")  # Dash registers its callbacks at the first request
    return callback_body(app, "pages.wall.refresh_live", {"wall-live-due.data": 1, "wall-lang.data": "en"})
