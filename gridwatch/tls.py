"""Certificates, keys and other secrets on disk, and the TLS context of a certificate the operator gives.

A secret file (a private key, a CA key, a device's .p12 or data package) is read only when it is a
regular file of mode 600 (nothing for group or others) and written only with that mode, atomically.
:func:`server_context` checks a certificate and key pair the way an operator needs to hear it, each
failure in one line: a missing or unreadable file, a key readable by others, a file that is not PEM,
an encrypted key, a certificate that is not the key's or has expired.
"""
from __future__ import annotations

import os
import ssl
import stat
from datetime import datetime, timezone
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gridwatch.errors import GridwatchError

__all__ = ["check_secret_file", "write_secret", "server_context", "MIN_TLS"]

# TLS 1.0 and 1.1 are refused everywhere (RFC 8996).
MIN_TLS = ssl.TLSVersion.TLSv1_2


def check_secret_file(path: Path, what: str) -> Path:
    """``path`` if it is a regular file that only its owner may read; otherwise a :class:`GridwatchError`."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise GridwatchError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise GridwatchError(f"{what} {path} cannot be read ({exc.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        raise GridwatchError(f"{what} {path} is not a file")
    if info.st_mode & 0o077:
        raise GridwatchError(f"{what} {path} may be read by group or others (mode {stat.S_IMODE(info.st_mode):o}): "
                             f"chmod 600 {path}")
    if not os.access(path, os.R_OK):
        raise GridwatchError(f"{what} {path} cannot be read by this user")
    return path


def write_secret(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` with mode 600, atomically (a reader sees the old file or the new one)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)  # a temporary file left by a crash keeps its old mode through O_TRUNC
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise GridwatchError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise GridwatchError(f"{what} {path} is not a file") from None
    except OSError as exc:
        raise GridwatchError(f"{what} {path} cannot be read ({exc.strerror})") from None


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server-side TLS context of the PEM certificate ``cert`` (its chain after it) and its key ``key``,
    each checked first so that a wrong file is named in one line."""
    check_secret_file(key, "the TLS key")
    try:
        chain = x509.load_pem_x509_certificates(_read(cert, "the TLS certificate"))
    except ValueError:
        raise GridwatchError(f"the TLS certificate {cert} is not a PEM certificate") from None
    try:
        private = serialization.load_pem_private_key(_read(key, "the TLS key"), password=None)
    except TypeError:
        raise GridwatchError(f"the TLS key {key} is encrypted: give its unencrypted form (mode 600)") from None
    except (ValueError, serialization.UnsupportedAlgorithm):
        raise GridwatchError(f"the TLS key {key} is not a PEM private key") from None
    if chain[0].public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) \
            != private.public_key().public_bytes(serialization.Encoding.DER,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo):
        raise GridwatchError(f"the TLS certificate {cert} is not the certificate of the key {key}")
    expires = chain[0].not_valid_after_utc
    if expires <= datetime.now(timezone.utc):
        raise GridwatchError(f"the TLS certificate {cert} expired on {expires:%Y-%m-%d}: renew it")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = MIN_TLS
    try:
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise GridwatchError(f"the TLS certificate {cert} and key {key} cannot be used: {exc}") from None
    return context
