"""Signed-in Flask test clients of the dashboard."""
from __future__ import annotations

import http.cookiejar
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

__all__ = ["ORIGIN", "client_of", "signed_opener", "cli_account"]

# The origin of the Flask test client's requests (state-changing requests must name it).
ORIGIN = "http://localhost"


def client_of(app, account: tuple[str, str] | None, *, address: str = "127.0.0.1"):
    """A test client of the Dash ``app`` from ``address``, signed in as ``account`` (None: anonymous)."""
    client = app.server.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    if account is not None:
        response = client.post("/login", data={"name": account[0], "password": account[1]}, headers={"Origin": ORIGIN})
        assert response.status_code == 303, response.data[:300]
    return client


def signed_opener(base: str, account: tuple[str, str], *, timeout_s: float = 60.0) -> urllib.request.OpenerDirector:
    """A urllib opener whose requests carry the session of ``account``, signed in at ``base`` (retried
    until the server answers, up to ``timeout_s``)."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    form = urllib.parse.urlencode({"name": account[0], "password": account[1]}).encode()
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            opener.open(urllib.request.Request(f"{base}/login", data=form, headers={"Origin": base}), timeout=10)
            return opener
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def cli_account(gridwatch: list[str], env: dict[str, str], role: str = "viewer") -> tuple[str, str]:
    """A new account made with ``gridwatch users add --generate``: (name, password)."""
    name = f"t-{role}"
    added = subprocess.run([*gridwatch, "users", "add", name, "--role", role, "--generate"], env=env,
                           capture_output=True, text=True, timeout=120)
    assert added.returncode == 0, added.stderr
    return name, added.stdout.split("password: ", 1)[1].split()[0]
