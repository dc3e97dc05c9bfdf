"""HTTPS for the dashboard: Hypercorn serving the Flask app over TLS.

waitress, which serves plain HTTP, has no TLS. The TLS-capable WSGI servers tried first both let one
client hold up every other: cheroot's built-in adapter runs each TLS handshake on its accept thread
(one silent TCP connection delayed every other client by its 10 s timeout), and gunicorn's gthread
worker runs it in a worker thread with no time limit (20 clients sending a byte of a handshake left
no thread for anyone). Hypercorn runs each handshake on its event loop with a time limit, reads a
request's body whole before the app sees it, and calls the WSGI app in a pool of ``threads``
threads, as waitress does; it speaks HTTP/2 to browsers that offer it.
"""
from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from gridwatch.tls import server_context

__all__ = ["serve_https"]

HANDSHAKE_S = 10.0


def serve_https(make_app: Callable[[], object], *, host: str, port: int, cert: Path, key: Path, threads: int) -> None:
    """Serve the WSGI app that ``make_app`` makes over HTTPS with ``cert`` and ``key`` until SIGTERM or SIGINT."""
    from hypercorn.config import Config

    server_context(cert, key)  # a wrong file is named in one line before anything listens
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.certfile, config.keyfile = str(cert), str(key)
    config.ssl_handshake_timeout = HANDSHAKE_S
    config.include_server_header = False
    asyncio.run(_serve(make_app(), config, threads))


async def _serve(app: object, config: object, threads: int) -> None:
    from hypercorn.asyncio import serve

    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(threads, thread_name_prefix="gridwatch-https"))
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await serve(app, config, shutdown_trigger=stop.wait, mode="wsgi")
