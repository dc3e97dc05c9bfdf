"""The installation's own certificate authority: device certificates for CoT over TLS, and the service's.

It lives in ``settings.pki_dir`` (``<home>/pki``, mode 700): ``ca.key`` (mode 600) and ``ca.crt``,
made on first need (``gridwatch devices cert`` or ``gridwatch ingest``), and ``service.key`` and
``service.crt``, the ingest service's certificate for its CoT TLS port, which the CA issues and
issues again when the names it must carry change or it is 30 days from expiry. Keys are RSA 2048
with SHA-256 signatures, what ATAK, WinTAK and TAK Server use.

A device certificate names the unit's callsign as its subject CN and is for client authentication
only. The service verifies it against this CA alone and then takes it only while it is the device's
current certificate (its SHA-256 fingerprint in ``device.cert_fingerprint``), so issuing a new one or
revoking the device supersedes the old one without a revocation list.
"""
from __future__ import annotations

import fcntl
import ipaddress
import secrets
import socket
import ssl
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gridwatch.errors import GridwatchError
from gridwatch.tls import MIN_TLS, check_secret_file, write_secret

__all__ = ["Authority", "Issued", "fingerprint", "service_names"]

CA_DAYS = 10 * 365
SERVICE_DAYS = 397
RENEW_BEFORE = timedelta(days=30)
KEY_BITS = 2048
# Back-dated, so that a device whose clock is a little behind takes a certificate issued just now.
CLOCK_SKEW = timedelta(minutes=5)
_WILDCARDS = {"", "0.0.0.0", "::"}


def fingerprint(cert: x509.Certificate) -> str:
    """The certificate's SHA-256 fingerprint as lower-case hex (what ``device.cert_fingerprint`` holds)."""
    return cert.fingerprint(hashes.SHA256()).hex()


def service_names(host: str, extra: Iterable[str] = ()) -> list[str]:
    """The names the service certificate carries: localhost, this machine's names, the listening
    address ``host`` (unless it is every interface) and ``extra``, each once."""
    names = ["localhost", "127.0.0.1", "::1", socket.gethostname(), socket.getfqdn(), host, *extra]
    return list(dict.fromkeys(n.strip() for n in names if n.strip() not in _WILDCARDS))


@dataclass(frozen=True)
class Issued:
    """A key and the certificate the CA issued for it."""

    key: rsa.RSAPrivateKey
    cert: x509.Certificate

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.cert)


class Authority:
    """The CA of one installation: opened (made on first need) with :meth:`open`."""

    def __init__(self, directory: Path, key: rsa.RSAPrivateKey, cert: x509.Certificate) -> None:
        self.directory = directory
        self.key = key
        self.cert = cert

    @property
    def cert_path(self) -> Path:
        """The CA certificate (PEM): what clients and the service trust."""
        return self.directory / "ca.crt"

    @classmethod
    def open(cls, directory: Path) -> Authority:
        """The CA in ``directory``, made there first if there is none."""
        with _locked(directory):
            key_path, cert_path = directory / "ca.key", directory / "ca.crt"
            if not key_path.exists() and not cert_path.exists():
                return cls._create(directory)
            for missing in (p for p in (key_path, cert_path) if not p.exists()):
                raise GridwatchError(
                    f"the certificate authority in {directory} is incomplete ({missing.name} is missing): restore it "
                    f"from a backup, or move {directory} away to make a new one (every device certificate must then "
                    "be issued again)")
            check_secret_file(key_path, "the CA key")
            try:
                key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
                cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            except (TypeError, ValueError) as exc:
                raise GridwatchError(f"the certificate authority in {directory} cannot be read ({exc})") from None
            return cls(directory, key, cert)

    @classmethod
    def _create(cls, directory: Path) -> Authority:
        key = _new_key()
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "gridwatch"),
                          x509.NameAttribute(NameOID.COMMON_NAME, f"gridwatch CA {secrets.token_hex(4)}")])
        now = datetime.now(timezone.utc)
        cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW).not_valid_after(now + timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_usage(cert_sign=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        write_secret(directory / "ca.key", _pem_key(key))
        (directory / "ca.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cls(directory, key, cert)

    def issue_device(self, callsign: str, *, days: int) -> Issued:
        """A new key and client certificate for the device ``callsign`` (the subject CN)."""
        key = _new_key()
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "gridwatch"),
                             x509.NameAttribute(NameOID.COMMON_NAME, callsign)])
        builder = self._builder(subject, key, days).add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        return Issued(key, builder.sign(self.key, hashes.SHA256()))

    def issued_here(self, cert: x509.Certificate) -> bool:
        """Whether this CA signed ``cert``."""
        try:
            cert.verify_directly_issued_by(self.cert)
        except (ValueError, TypeError, InvalidSignature):
            return False
        return True

    def service_tls(self, names: Iterable[str]) -> ssl.SSLContext:
        """The CoT TLS port's context: the service certificate for ``names``, and a client certificate
        that this CA issued required of every client."""
        cert_path, key_path = self._service_files(list(names))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=self.cert_path)
        context.verify_mode = ssl.CERT_REQUIRED
        context.minimum_version = MIN_TLS
        context.load_cert_chain(cert_path, key_path)
        return context

    def _service_files(self, names: list[str]) -> tuple[Path, Path]:
        """``service.crt`` and ``service.key``, issued again unless they are this CA's, carry exactly
        ``names`` and are valid for more than :data:`RENEW_BEFORE`."""
        cert_path, key_path = self.directory / "service.crt", self.directory / "service.key"
        with _locked(self.directory):
            if key_path.exists() and cert_path.exists():
                check_secret_file(key_path, "the service key")
                try:
                    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
                    current = (self.issued_here(cert) and _names_of(cert) == set(names)
                               and cert.not_valid_after_utc - datetime.now(timezone.utc) > RENEW_BEFORE)
                except ValueError:
                    current = False
                if current:
                    return cert_path, key_path
            key = _new_key()
            subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "gridwatch"),
                                 x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
            cert = (
                self._builder(subject, key, SERVICE_DAYS)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .add_extension(x509.SubjectAlternativeName([_general_name(n) for n in names]), critical=False)
                .sign(self.key, hashes.SHA256())
            )
            write_secret(key_path, _pem_key(key))
            write_secret(cert_path, cert.public_bytes(serialization.Encoding.PEM))
            return cert_path, key_path

    def _builder(self, subject: x509.Name, key: rsa.RSAPrivateKey, days: int) -> x509.CertificateBuilder:
        """An end-entity certificate of this CA, valid for ``days``, before its purpose is added."""
        now = datetime.now(timezone.utc)
        return (
            x509.CertificateBuilder().subject_name(subject).issuer_name(self.cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW).not_valid_after(now + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(cert_sign=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
        )


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)


def _pem_key(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=not cert_sign,
                         data_encipherment=False, key_agreement=False, key_cert_sign=cert_sign, crl_sign=cert_sign,
                         encipher_only=False, decipher_only=False)


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _names_of(cert: x509.Certificate) -> set[str]:
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(n.value) for n in names}


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Hold the CA directory's lock (made with mode 700 if need be): two commands never make two CAs."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(directory / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
