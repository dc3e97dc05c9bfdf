"""No secret in a log line: tokens are cut out of every record the service logs, its own and aiohttp's.

A client's malformed HTTP request is logged as one line naming the kind of
error, never its bytes (aiohttp's message quotes the request line or header,
token and all). Every other record passes through :func:`redact`: the value
after ``token`` (a query, a form, JSON, CoT's ``<__auth token=..>``) or
``Bearer`` is cut out, and so is any run of 32 or more URL-safe base64
characters (a device token is 43), in the message and in a traceback.
"""
from __future__ import annotations

import logging
import re

from aiohttp.http_exceptions import HttpProcessingError

__all__ = ["redact", "SecretFilter", "install_secret_filter"]

_BEARER = re.compile(r"(?i)(bearer\s+)\S+")
_KEYED = re.compile(r"""(?i)(token\\?["']?\s*(?:[:=]|%3[ad])\s*\\?["']?)[^\s&"'<>,;\\]+""")
_LONG = re.compile(r"[A-Za-z0-9_\-]{32,}")
HIDDEN = "<redacted>"


def redact(text: str) -> str:
    """``text`` with every token-like value replaced by ``<redacted>``."""
    text = _BEARER.sub(rf"\g<1>{HIDDEN}", text)
    text = _KEYED.sub(rf"\g<1>{HIDDEN}", text)
    return _LONG.sub(HIDDEN, text)


class SecretFilter(logging.Filter):
    """Rewrite a record so it holds no secret (always lets it through)."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):  # a client's bad request: its kind, not its bytes
            record.msg, record.args = f"{record.getMessage()}: {type(error).__name__} (status {error.code})", None
            record.exc_info, record.exc_text = None, None
            return True
        record.msg, record.args = redact(record.getMessage()), None
        if record.exc_info:
            record.exc_text, record.exc_info = redact(logging.Formatter().formatException(record.exc_info)), None
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def install_secret_filter() -> None:
    """Filter every record on its way out: on the root logger's handlers and Python's last resort."""
    for handler in [*logging.getLogger().handlers, logging.lastResort]:
        if handler is not None and not any(isinstance(f, SecretFilter) for f in handler.filters):
            handler.addFilter(SecretFilter())
