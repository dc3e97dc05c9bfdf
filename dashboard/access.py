"""Who may see and do what: sign-in, kiosk links, and the one table of routes, pages and callbacks.

Every request passes :func:`_guard` before anything else runs. It looks the Flask route up in
:data:`ROUTES`; a Dash callback (``POST /_dash-update-component``) is looked up by its function in
:data:`CALLBACKS`, and a page by its path in :data:`PAGES`, both at the page's HTML and at Dash's
page router. Each names the least role allowed (roles rank viewer < dispatcher < planner < admin,
each allowed what the one before is). A route, page or callback missing from the table is refused
(and a test fails). Anonymous requests get the sign-in page for pages and 401 for data.

Sessions are Flask's signed cookie (SameSite=Strict, HttpOnly) managed by Flask-Login; they end
after ``session_idle_s`` without a request, ``session_max_s`` after signing in, when the password
changes or the account goes. A kiosk session (a wall opened from its link) has no time limit and
ends when the link is revoked. The account behind a session is re-read at most every
:data:`RECHECK_S`; while the database is away the signed session is trusted as it stood.
State-changing requests must come from our own origin (checked ``Origin``). Wrong passwords (and
wrong kiosk links) are limited per account and per address with ``limits``, the library under
Flask-Limiter, used in those two views alone so that no other request pays for it.
"""
from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit

import dash
import flask
from flask_login import LoginManager, UserMixin, current_user, login_user, logout_user
from limits import parse, storage, strategies
from markupsafe import escape
from werkzeug.exceptions import BadRequest

from gridwatch.dashboard._context import DB_ERRORS, context
from gridwatch.errors import GridwatchError
from gridwatch.etl.accounts import account_by_id, kiosk_by_id, kiosk_for, sign_in
from gridwatch.layers.queries import command_unit_tree, subtree
from gridwatch.settings import ROLES, Settings
from gridwatch.tls import check_secret_file

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Principal", "Rule", "ROUTES", "PAGES", "CALLBACKS", "install_access", "principal", "may", "rank",
           "refuse_unusable_values",
           "scope_code", "callback_id", "RECHECK_S"]

_log = logging.getLogger(__name__)

RECHECK_S = 5.0
KIOSK_LIFETIME = timedelta(days=400)  # browsers keep a cookie at most this long; a wall in use renews it
_SEEN_EVERY_S = 60.0


@dataclass(frozen=True)
class Rule:
    """Who may use a route: the least role (None: anyone, signed in or not); a page redirects to sign-in."""

    least: str | None
    page: bool = False


PUBLIC = Rule(None)
SIGNED_IN = Rule("viewer")

# Every Flask route, by its rule. Pages and callbacks are then looked up in PAGES and CALLBACKS.
ROUTES: dict[str, Rule] = {
    "/login": PUBLIC,
    "/logout": PUBLIC,
    "/kiosk/<token>": PUBLIC,
    "/": Rule("viewer", page=True),
    "/<path:path>": Rule("viewer", page=True),
    "/_dash-layout": SIGNED_IN,
    "/_dash-dependencies": SIGNED_IN,
    "/_dash-update-component": SIGNED_IN,
    "/_dash-component-suites/<string:package_name>/<path:fingerprinted_path>": SIGNED_IN,
    "/_dash-component-suites/plotly/package_data/plotly.min.js": SIGNED_IN,
    "/_reload-hash": SIGNED_IN,
    "/_favicon.ico": SIGNED_IN,
    "/assets/<path:filename>": SIGNED_IN,
    "/static/<path:filename>": SIGNED_IN,
    "/style.json": SIGNED_IN,
    "/tiles/<layer_id>/<z>/<x>/<y>.pbf": SIGNED_IN,
    "/tiles/group/<group>/<z>/<x>/<y>.pbf": SIGNED_IN,
    "/glyphs/<fontstack>/<int:start>-<int:end>.pbf": SIGNED_IN,
    "/api/live": SIGNED_IN,
    "/plan/static/<name>": Rule("planner"),
    "/plan/faces.geojson": Rule("planner"),
}

# Every page by its path: the least role that may open it (an unknown path shows Dash's 404 page).
PAGES: dict[str, str] = {"/": "viewer", "/wall": "viewer", "/dispatch": "viewer", "/plan": "planner"}

# Every server-side Dash callback, by :func:`callback_id`: the least role that may run it.
CALLBACKS: dict[str, str] = {
    "dash.dash.update": "viewer",  # Dash's page router: then the page's own rule, from PAGES
    "pages.wall.refresh_live": "viewer",
    "pages.wall.refresh_slow": "viewer",
    "pages.dispatch.refresh_targets": "viewer",
    "pages.dispatch.nearest": "viewer",
    "pages.dispatch.alerts": "viewer",
    "pages.dispatch.acknowledge": "dispatcher",
    "pages.dispatch.evidence": "dispatcher",
    "pages.dispatch.acknowledge_group": "dispatcher",
    "pages.dispatch.refresh_units": "viewer",
    "pages.dispatch.replay": "viewer",
    "pages.plan.act": "planner",
    "pages.plan.versions_panel": "planner",
    "pages.plan.rebalance": "planner",
    "pages.plan.compare": "planner",
    "pages.plan.export": "planner",
}


@dataclass(frozen=True)
class Principal(UserMixin):
    """Who a session is: an account (``account:ID``) or a kiosk (``kiosk:ID``), its role and unit."""

    id: str
    name: str
    role: str
    unit: str
    signed_in_at: float

    @property
    def kiosk(self) -> bool:
        return self.id.startswith("kiosk:")


def rank(role: str | None) -> int:
    """A role's place in :data:`ROLES` (-1 for none)."""
    return ROLES.index(role) if role in ROLES else -1


def principal() -> Principal | None:
    """Who the current request is from (None: nobody signed in)."""
    user = current_user
    return user if isinstance(user, Principal) else None


def may(least: str) -> bool:
    """Whether the current request's principal has at least the role ``least``."""
    who = principal()
    return who is not None and rank(who.role) >= rank(least)


def callback_id(function: object) -> str:
    """The name a Dash callback goes by in :data:`CALLBACKS`: its module and function."""
    return f"{getattr(function, '__module__', '?')}.{getattr(function, '__name__', '?')}"


def _tree() -> pd.DataFrame:
    """The command-unit tree, read once per request (a callback asks for several scopes)."""
    if "gridwatch_tree" not in flask.g:
        ctx = context()
        flask.g.gridwatch_tree = ctx.known.read("tree", lambda: command_unit_tree(ctx.engine)).value
    return flask.g.gridwatch_tree


def scope_code(requested: str | None) -> str | None:
    """The command unit the request may look at: ``requested`` when it lies within the principal's
    unit, else the principal's unit itself (None, everything, when that unit is all there is)."""
    who = principal()
    if who is None:
        raise PermissionError("nobody is signed in")
    try:
        tree = _tree()
    except DB_ERRORS:
        return who.unit
    mine = subtree(tree, who.unit)
    if requested is not None and requested in set(mine["code"]):
        return requested
    return None if len(mine) == len(tree) else who.unit


# -- sign-in, kiosk links and sign-out ----------------------------------------
_LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>gridwatch · sign in</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ background: #0d1117; color: #e6edf3; font: 16px system-ui, sans-serif; display: grid;
       place-items: center; min-height: 100vh; margin: 0; }}
form {{ background: #161b22; padding: 2em; border-radius: 8px; display: grid; gap: .8em; min-width: 18em; }}
input, button {{ font: inherit; padding: .5em; border-radius: 4px; border: 1px solid #30363d; }}
input {{ background: #0d1117; color: inherit; }}
button {{ background: #238636; color: #fff; cursor: pointer; }}
.message {{ color: #f85149; margin: 0; }}
</style></head>
<body><form method="post" action="/login">
<h1>gridwatch</h1>
{message}
<label>Name · 账号 <input name="name" autocomplete="username" required autofocus></label>
<label>Password · 密码 <input name="password" type="password" autocomplete="current-password" required></label>
<input type="hidden" name="next" value="{next}">
<button type="submit">Sign in · 登录</button>
</form></body></html>"""


_DB_DOWN = "The database cannot be reached: try again in a minute · 数据库暂时无法连接，请稍后再试"


def _login_page(message: str | None, status: int) -> flask.Response:
    body = _LOGIN_PAGE.format(message=f'<p class="message" role="alert">{escape(message)}</p>' if message else "",
                              next=escape(_local_next(flask.request.values.get("next"))))
    response = flask.Response(body, status=status, mimetype="text/html")
    response.headers["Cache-Control"] = "no-store"
    return response


def _local_next(target: str | None) -> str:
    """Where to go after signing in: a path on this server, never another site."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _address() -> str | None:
    return flask.request.remote_addr


def _sign_in_as(who: Principal, *, permanent: bool) -> None:
    flask.session.clear()
    flask.session.permanent = permanent
    flask.session["who"] = [who.name, who.role, who.unit, who.signed_in_at]
    flask.session["seen"] = time.time()
    login_user(who)


class _Failures:
    """Wrong passwords per account and per address in a moving window; past the limit, tries wait."""

    def __init__(self, limit: str) -> None:
        self.limit = parse(limit)
        self.window = strategies.MovingWindowRateLimiter(storage.MemoryStorage())

    def wait_s(self, name: str | None, address: str | None) -> float:
        """Seconds until the account (None: any) and the address may try again (0: now)."""
        blocked = [self.window.get_window_stats(self.limit, *key).reset_time for key in self._keys(name, address)
                   if not self.window.test(self.limit, *key)]
        return max(0.0, max(blocked) - time.time()) if blocked else 0.0

    def count(self, name: str | None, address: str | None) -> None:
        """One more failure of the account (None: none named) and the address."""
        for key in self._keys(name, address):
            self.window.hit(self.limit, *key)

    @staticmethod
    def _keys(name: str | None, address: str | None) -> list[tuple[str, str]]:
        return [("address", address or "-")] + ([("account", name.lower())] if name is not None else [])


_TOO_MANY = "Too many wrong tries: wait a few minutes · 错误次数过多，请稍后再试"


def _too_many(wait_s: float) -> flask.Response:
    response = _login_page(_TOO_MANY, 429)
    response.headers["Retry-After"] = str(int(wait_s) + 1)
    return response


def _login(failures: _Failures) -> flask.Response:
    """The sign-in page; a POST checks the name and password (wrong ones: 401, and counted)."""
    if flask.request.method == "GET":
        return _login_page(None, 200)
    name = flask.request.form.get("name", "")[:64]
    password = flask.request.form.get("password", "")[:1024]
    wait = failures.wait_s(name, _address())
    if wait:
        return _too_many(wait)
    try:
        with context().engine.begin() as conn:
            account = sign_in(conn, name, password, address=_address())
    except DB_ERRORS:
        return _login_page(_DB_DOWN, 503)
    if account is None:
        failures.count(name, _address())
        return _login_page("Wrong name or password · 账号或密码错误", 401)
    _sign_in_as(Principal(f"account:{account.id}", account.name, account.role, account.unit, time.time()),
                permanent=False)
    return flask.redirect(_local_next(flask.request.form.get("next")), 303)


def _logout() -> flask.Response:
    logout_user()
    flask.session.clear()
    return flask.redirect("/login", 303)


def _kiosk(token: str, failures: _Failures) -> flask.Response:
    """A wall's link: sign in as its kiosk and go to the wall (the token leaves the address bar).
    Wrong links count against the address as wrong passwords do."""
    wait = failures.wait_s(None, _address())
    if wait:
        return _too_many(wait)
    try:
        with context().engine.begin() as conn:
            kiosk = kiosk_for(conn, token, address=_address())
    except DB_ERRORS:
        return _login_page(_DB_DOWN, 503)
    if kiosk is None:
        failures.count(None, _address())
        return _login_page("This kiosk link is not valid (revoked?) · 此展示链接无效", 401)
    _sign_in_as(Principal(f"kiosk:{kiosk.id}", kiosk.name, "viewer", kiosk.unit, time.time()), permanent=True)
    return flask.redirect(f"/wall?unit={kiosk.unit}", 303)


# -- the guard -----------------------------------------------------------------
class _Sessions:
    """Principals of sessions, checked against the database at most every :data:`RECHECK_S`."""

    def __init__(self) -> None:
        self._checked: dict[str, tuple[float, object]] = {}
        self._lock = threading.Lock()

    def load(self, user_id: str) -> Principal | None:
        """The session's principal; None when its account or kiosk is gone or changed since sign-in."""
        stored = flask.session.get("who")
        if not isinstance(stored, list) or len(stored) != 4:
            return None
        who = Principal(user_id, *stored)
        current = self._current(user_id)
        if current is None:
            return None
        if current is not _UNKNOWN:
            role, unit, valid_from = current
            if valid_from > who.signed_in_at:
                return None
            who = Principal(user_id, who.name, role, unit, who.signed_in_at)
        return who

    def _current(self, user_id: str) -> tuple[str, str, float] | None | object:
        """(role, unit, sessions valid from) of the account or kiosk; None when gone; unknown while
        the database is away and it was never read."""
        now = time.monotonic()
        with self._lock:
            checked = self._checked.get(user_id)
        if checked is not None and now - checked[0] < RECHECK_S:
            return checked[1]
        kind, _, raw = user_id.partition(":")
        try:
            with context().engine.connect() as conn:
                if kind == "account":
                    account = account_by_id(conn, int(raw))
                    value = None if account is None else (account.role, account.unit,
                                                          account.password_changed_at.timestamp())
                else:
                    kiosk = kiosk_by_id(conn, int(raw))
                    value = None if kiosk is None else ("viewer", kiosk.unit, kiosk.created_at.timestamp())
        except DB_ERRORS:
            return checked[1] if checked is not None else _UNKNOWN
        except ValueError:
            return None
        with self._lock:
            self._checked[user_id] = (now, value)
        return value


_UNKNOWN = object()


def _same_origin() -> bool:
    """Whether a state-changing request comes from a page of ours (its Origin, else its Referer)."""
    source = flask.request.headers.get("Origin") or flask.request.headers.get("Referer")
    if not source:
        return False
    parts, ours = urlsplit(source), urlsplit(flask.request.host_url)
    return (parts.scheme, parts.netloc) == (ours.scheme, ours.netloc)


def _expired(settings: Settings) -> bool:
    """Whether a person's session has been idle or open too long (a kiosk's never is)."""
    who = principal()
    if who is None or who.kiosk:
        return False
    now = time.time()
    seen = float(flask.session.get("seen", 0))
    return now - seen > settings.session_idle_s or now - who.signed_in_at > settings.session_max_s


def _refused(rule: Rule, status: int) -> flask.Response:
    """The answer to a request not allowed: the sign-in page for a page, a JSON error for data."""
    if status == 401 and rule.page:
        target = flask.request.full_path if flask.request.query_string else flask.request.path
        return flask.redirect(f"/login?next={quote(target, safe='/')}", 303)
    message = {401: "sign in first", 403: "not allowed for your role",
               400: "no such callback, or a request not shaped as its own"}[status]
    return flask.Response(flask.json.dumps({"error": message}), status=status, mimetype="application/json")


def _sent_as_registered(sent: object, registered: list[dict]) -> bool:
    """Whether a callback request's inputs (or state, or outputs) are the callback's own: one per
    registered dependency, naming its id and property (an output's may carry Dash's ``@`` suffix of
    a duplicate output); a wildcard one's ids are objects, and it may be a list of them."""
    if not isinstance(sent, list) or len(sent) != len(registered):
        return False
    for item, dependency in zip(sent, registered):
        wildcard = dependency["id"].startswith("{")
        for one in item if wildcard and isinstance(item, list) else [item]:
            if not isinstance(one, dict) or str(one.get("property")).partition("@")[0] != dependency["property"]:
                return False
            if not (isinstance(one.get("id"), dict) if wildcard else one.get("id") == dependency["id"]):
                return False
    return True


def _well_formed(body: dict, entry: dict) -> bool:
    """Whether a ``_dash-update-component`` body has the shape of its callback's (a hand-made one
    that does not would fail inside Dash, with a 500 and a logged traceback)."""
    output = entry["output"]
    outputs = output if isinstance(output, list) else [output]
    sent = body.get("outputs")
    return (_sent_as_registered(body.get("inputs"), entry["inputs"])
            and _sent_as_registered(body.get("state", []), entry["state"])
            and _sent_as_registered(sent if isinstance(output, list) else [sent],
                                    [{"id": o.component_id_str(), "property": o.component_property} for o in outputs])
            and isinstance(changed := body.get("changedPropIds", []), list)
            and all(isinstance(prop, str) for prop in changed))


def refuse_unusable_values(error: Exception) -> None:
    """Dash's handler of an exception raised in a server callback: values no page sends (a
    hand-made request; the pages' own are tested to work) are refused with a 400 and one log
    line instead of a 500 and a logged traceback, which is kept for the debug level."""
    body = flask.request.get_json(silent=True)
    output = body.get("output") if isinstance(body, dict) else None
    reason = (str(error).strip().splitlines() or [""])[0][:200]
    _log.warning("callback %s refused its request's values: %s: %s", str(output)[:120], type(error).__name__, reason)
    _log.debug("the callback's exception", exc_info=error)
    raise BadRequest(response=flask.Response(flask.json.dumps({"error": "the callback cannot use the values sent"}),
                                             status=400, mimetype="application/json"))


def _callback_rule(app: dash.Dash) -> str | None:
    """The least role of the callback a ``_dash-update-component`` request runs (None: no such
    callback, or a request not shaped as its callback's)."""
    body = flask.request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("output"), str):
        return None
    entry = app.callback_map.get(body["output"])
    function = entry.get("callback") if entry else None
    if function is None or not _well_formed(body, entry):
        return None
    least = CALLBACKS.get(callback_id(function))
    if least is not None and callback_id(function) == "dash.dash.update":
        pathname = next((i.get("value") for i in body.get("inputs", [])
                         if isinstance(i, dict) and i.get("property") == "pathname"), None)
        page = PAGES.get(pathname) if isinstance(pathname, str) else None
        return page if page is not None and rank(page) > rank(least) else least
    return least


def _guard(app: dash.Dash, settings: Settings) -> flask.Response | None:
    rule_of = flask.request.url_rule
    rule = ROUTES.get(rule_of.rule) if rule_of is not None else SIGNED_IN
    if rule is None:  # a route nobody put in the table
        return _refused(SIGNED_IN, 403)
    if flask.request.method not in ("GET", "HEAD", "OPTIONS") and not _same_origin():
        return flask.Response(flask.json.dumps({"error": "cross-origin request refused"}), status=403,
                              mimetype="application/json")
    if rule.least is None:
        return None
    if principal() is not None and _expired(settings):
        logout_user()
        flask.session.clear()
    who = principal()
    if who is None:
        return _refused(rule, 401)
    if time.time() - float(flask.session.get("seen", 0)) > _SEEN_EVERY_S:
        flask.session["seen"] = time.time()
    least = rule.least
    if rule.page:
        least = PAGES.get(flask.request.path, "viewer")
    elif rule_of is not None and rule_of.rule == "/_dash-update-component":
        least = _callback_rule(app)
        if least is None:
            return _refused(rule, 400)
    return None if rank(who.role) >= rank(least) else _refused(rule, 403)


def _secret_key(settings: Settings) -> str:
    """The session-signing key: ``GRIDWATCH_SECRET_KEY``, else ``<home>/secret_key`` (made once, mode 600)."""
    if settings.secret_key:
        return settings.secret_key
    path = settings.home_dir / "secret_key"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # the first start makes it, once
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
    except FileExistsError:
        pass
    except OSError as exc:
        raise GridwatchError(f"cannot write the session key {path}: {exc.strerror}") from None
    key = check_secret_file(path, "the session key").read_text().strip()
    if len(key) < 32:
        raise GridwatchError(f"the session key {path} is too short: remove it and a new one is made")
    return key


def install_access(app: dash.Dash, settings: Settings) -> None:
    """Put sign-in, kiosk links and the guard in front of every route of ``app``."""
    server = app.server
    server.config.update(
        SECRET_KEY=_secret_key(settings), SESSION_COOKIE_NAME="gridwatch_session", SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict", PERMANENT_SESSION_LIFETIME=KIOSK_LIFETIME,
        SESSION_REFRESH_EACH_REQUEST=False,
    )
    sessions = _Sessions()
    manager = LoginManager(server)
    manager.user_loader(sessions.load)
    # The guard answers anonymous requests itself; Flask-Login's own redirect is never used.
    manager.unauthorized_handler(lambda: _refused(SIGNED_IN, 401))
    failures = _Failures(settings.login_failures)
    server.add_url_rule("/login", "login", lambda: _login(failures), methods=["GET", "POST"])
    server.add_url_rule("/logout", "logout", _logout, methods=["GET", "POST"])
    server.add_url_rule("/kiosk/<token>", "kiosk", lambda token: _kiosk(token, failures))
    server.before_request(lambda: _guard(app, settings))
