"""TLS where it matters: device certificates from the installation's CA, CoT over mutual TLS from a
TAK client library (pytak), revocation of open connections, HTTPS on the ingest HTTP port and on
the dashboard, and refusals of bad TLS material.

Real parts: the ``gridwatch`` command and the ingest service as subprocesses on the test database,
pytak, curl and Python's ssl as clients. Waits have deadlines; the tests count what happened, not
how fast.
"""
from __future__ import annotations

import asyncio
import configparser
import http.client
import ipaddress
import json
import os
import re
import ssl
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from xml.etree import ElementTree as ET

import pytak
import pytest
import requests
import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from gridwatch.etl.ingest.devices import DeviceRegistry, hash_token
from gridwatch.etl.ingest.pki import Authority
from gridwatch.etl.ingest.takpackage import device_p12

from _ingest import CENTRE, IngestProcess, cot_event, free_port, rows, seed
from _refdata import empty_tables

UNITS = {"T1": "vehicle", "T2": "vehicle", "T3": "foot", "T4": "vehicle", "T5": "vehicle"}
# The service must refuse a revoked device within 10 s; the deadline leaves room for a busy machine.
REVOKED_WITHIN_S = 20.0


def operator_cert(folder: Path, *, key_mode: int = 0o600) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, as an operator would bring, and its key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / "tls.crt", folder / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(key_mode)
    return cert_path, key_path


def gridwatch(home: Path, db_url: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run the ``gridwatch`` command with ``home`` and the test database."""
    env = {**os.environ, "GRIDWATCH_DATABASE_URL": db_url, "GRIDWATCH_HOME": str(home)}
    done = subprocess.run([sys.executable, "-m", "gridwatch.cli", *args], env=env, capture_output=True, text=True,
                          timeout=120)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def issue(home: Path, db_url: str, callsign: str, out: Path, *args: str) -> tuple[str, str]:
    """``gridwatch devices cert``: its output and the password it printed."""
    out_text = gridwatch(home, db_url, "devices", "cert", callsign, "--out", str(out), *args).stdout
    return out_text, re.search(r"password \(shown only now\): (\S+)", out_text).group(1)


@pytest.fixture(scope="module")
def live(engine: sa.Engine, db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    """The service with HTTPS on its HTTP port and CoT over TLS; a token per unit in ``UNITS``."""
    empty_tables(engine)
    tokens = seed(db_url, UNITS)
    home = tmp_path_factory.mktemp("ingest-tls")
    cert, key = operator_cert(home / "operator")
    service = IngestProcess(db_url, home, "--tls-cert", str(cert), "--tls-key", str(key), cafile=cert).start()
    yield service, tokens, home
    service.stop()


def pytak_config(port: int, p12: Path | None, password: str | None, cafile: Path) -> configparser.SectionProxy:
    config = configparser.ConfigParser()
    config["tak"] = {"COT_URL": f"tls://127.0.0.1:{port}", "PYTAK_TLS_CLIENT_CAFILE": str(cafile),
                     **({"PYTAK_TLS_CLIENT_CERT": str(p12), "PYTAK_TLS_CLIENT_PASSWORD": password} if p12 else {})}
    return config["tak"]


async def closed_by_server(reader: asyncio.StreamReader, *, within_s: float) -> bool:
    """Whether the server ends the connection (EOF, a reset or a TLS alert) within ``within_s``."""
    try:
        async with asyncio.timeout(within_s):
            while await reader.read(4096):  # what the server still sends before it closes
                continue
    except TimeoutError:
        return False
    except (ConnectionError, ssl.SSLError):
        return True
    return True


async def wait_rows(url: str, sql: str, params: tuple, count: int, *, within_s: float = 20.0) -> list[tuple]:
    deadline = time.monotonic() + within_s
    found = await asyncio.to_thread(rows, url, sql, params)
    while len(found) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        found = await asyncio.to_thread(rows, url, sql, params)
    return found


FIXES = ("SELECT p.source FROM position p JOIN unit u ON u.id = p.unit_id WHERE u.callsign = %s ORDER BY p.ts")


# -- certificates -------------------------------------------------------------------
def test_devices_cert_writes_a_data_package_and_a_p12_signed_by_the_ca(live: tuple, db_url: str,
                                                                       tmp_path: Path) -> None:
    service, _, home = live
    ca = x509.load_pem_x509_certificate((home / "pki" / "ca.crt").read_bytes())
    assert (home / "pki" / "ca.key").stat().st_mode & 0o777 == 0o600

    out, password = issue(home, db_url, "T1", tmp_path, "--host", "gw.example.org")
    package = tmp_path / "T1-gridwatch.zip"
    assert f"wrote {package}" in out and package.stat().st_mode & 0o777 == 0o600
    archive = zipfile.ZipFile(package)
    assert set(archive.namelist()) == {"MANIFEST/manifest.xml", "certs/gridwatch.pref", "certs/T1.p12",
                                       "certs/gridwatch-ca.p12"}
    listed = {c.get("zipEntry") for c in ET.fromstring(archive.read("MANIFEST/manifest.xml")).iter("Content")}
    assert listed == {"certs/gridwatch.pref", "certs/T1.p12", "certs/gridwatch-ca.p12"}
    pref = {e.get("key"): e.text for e in ET.fromstring(archive.read("certs/gridwatch.pref")).iter("entry")}
    assert pref["connectString0"] == "gw.example.org:8089:ssl"
    assert pref["certificateLocation"] == "cert/T1.p12" and pref["caLocation"] == "cert/gridwatch-ca.p12"
    assert pref["clientPassword"] == password and pref["locationCallsign"] == "T1"
    key, cert, chain = pkcs12.load_key_and_certificates(archive.read("certs/T1.p12"), password.encode())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "T1"
    cert.verify_directly_issued_by(ca)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers() and chain == [ca]
    assert pkcs12.load_key_and_certificates(archive.read("certs/gridwatch-ca.p12"), password.encode()) \
        == (None, None, [ca])
    with pytest.raises(ValueError):
        pkcs12.load_key_and_certificates(archive.read("certs/T1.p12"), b"not the password")

    # Issued again, as .p12 files: the new certificate is the device's one, the old one is superseded.
    out, password = issue(home, db_url, "T1", tmp_path, "--format", "p12")
    _, again, _ = pkcs12.load_key_and_certificates((tmp_path / "T1.p12").read_bytes(), password.encode())
    assert pkcs12.load_key_and_certificates((tmp_path / "gridwatch-ca.p12").read_bytes(), password.encode())[2] == [ca]
    current = again.fingerprint(hashes.SHA256()).hex()
    assert rows(db_url, "SELECT cert_fingerprint FROM device WHERE callsign = 'T1'") == [(current,)]
    assert current != cert.fingerprint(hashes.SHA256()).hex() and current in out
    listing = gridwatch(home, db_url, "devices", "list").stdout
    assert re.search(rf"^T1 .* yes +{current} +\d{{4}}-\d\d-\d\d +-$", listing, re.M), listing
    assert password not in service.log.read_text()


def test_devices_cert_and_revoke_refuse_an_unknown_callsign_in_one_line(live: tuple, db_url: str, tmp_path: Path) -> None:
    _, _, home = live
    done = gridwatch(home, db_url, "devices", "cert", "NOSUCH", "--out", str(tmp_path), check=False)
    assert done.returncode == 1 and "there is no unit 'NOSUCH'" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not list(tmp_path.iterdir())
    done = gridwatch(home, db_url, "devices", "revoke", "T1", "NOSUCH", check=False)
    assert done.returncode == 1 and "there is no device 'NOSUCH'" in done.stderr
    assert rows(db_url, "SELECT revoked_at FROM device WHERE callsign = 'T1'") == [(None,)]  # nothing revoked


def test_a_device_snapshot_of_the_older_form_is_read(tmp_path: Path) -> None:
    """A service upgraded while the database is down still lets its token devices in."""
    snapshot = tmp_path / "devices.json"
    snapshot.write_text(json.dumps({"T1": hash_token("a-token")}))
    registry = DeviceRegistry(snapshot)
    assert registry.load_snapshot()
    assert registry.check("T1", "a-token") and not registry.check("T1", "another")
    assert not registry.check_cert("T1", "00" * 32)


# -- CoT over TLS -------------------------------------------------------------------
def test_pytak_over_tls_with_an_issued_certificate_reports_fixes(live: tuple, db_url: str, tmp_path: Path) -> None:
    service, _, home = live
    _, password = issue(home, db_url, "T2", tmp_path, "--format", "p12")
    lon, lat = CENTRE

    async def report() -> list[tuple]:
        config = pytak_config(service.cot_tls_port, tmp_path / "T2.p12", password, home / "pki" / "ca.crt")
        _, writer = await pytak.protocol_factory(config)
        worker = pytak.TXWorker(asyncio.Queue(), config, writer)
        for event in (cot_event("T2", 30, lon, lat), cot_event("T2", 20, lon + 0.0003, lat),
                      cot_event("T1", 10, lon, lat)):  # another unit on T2's connection: refused
            await worker.send_data(event)
        found = await wait_rows(db_url, FIXES, ("T2",), 2)
        writer.close()
        return found

    assert asyncio.run(report()) == [("cot",), ("cot",)]
    assert rows(db_url, FIXES, ("T1",)) == []


def test_tls_port_refuses_no_certificate_a_foreign_ca_and_a_superseded_one(live: tuple, db_url: str,
                                                                            tmp_path: Path) -> None:
    service, _, home = live
    cafile = home / "pki" / "ca.crt"
    lon, lat = CENTRE
    foreign = Authority.open(tmp_path / "other-pki")
    (tmp_path / "foreign.p12").write_bytes(device_p12(foreign.issue_device("T3", days=1), foreign.cert, "T3", "pw"))
    _, old_password = issue(home, db_url, "T3", tmp_path / "old", "--format", "p12")
    _, new_password = issue(home, db_url, "T3", tmp_path / "new", "--format", "p12")

    async def without_a_certificate() -> bool:
        context = ssl.create_default_context(cafile=cafile)
        reader, writer = await asyncio.open_connection("127.0.0.1", service.cot_tls_port, ssl=context)
        writer.write(cot_event("T3", 5, lon, lat))
        closed = await closed_by_server(reader, within_s=10)
        writer.close()
        return closed

    async def with_pytak(p12: Path, password: str) -> bool:
        config = pytak_config(service.cot_tls_port, p12, password, cafile)
        reader, writer = await pytak.protocol_factory(config)
        await pytak.TXWorker(asyncio.Queue(), config, writer).send_data(cot_event("T3", 5, lon, lat))
        closed = await closed_by_server(reader, within_s=10)
        writer.close()
        return closed

    async def with_the_new_one() -> list[tuple]:
        """The new certificate connects (its first use makes the service read the device table again)."""
        config = pytak_config(service.cot_tls_port, tmp_path / "new" / "T3.p12", new_password, cafile)
        _, writer = await pytak.protocol_factory(config)
        await pytak.TXWorker(asyncio.Queue(), config, writer).send_data(cot_event("T3", 30, lon, lat))
        found = await wait_rows(db_url, FIXES, ("T3",), 1)
        writer.close()
        return found

    before = service.stats()["unauthorized"]
    assert asyncio.run(without_a_certificate())
    assert asyncio.run(with_pytak(tmp_path / "foreign.p12", "pw"))
    assert asyncio.run(with_the_new_one()) == [("cot",)]
    assert asyncio.run(with_pytak(tmp_path / "old" / "T3.p12", old_password))
    assert rows(db_url, FIXES, ("T3",)) == [("cot",)]
    assert service.stats()["unauthorized"] == before + 1  # the superseded one; the others fail their handshake


def test_a_revoked_device_is_cut_off_on_every_port(live: tuple, db_url: str, tmp_path: Path) -> None:
    service, tokens, home = live
    _, password = issue(home, db_url, "T4", tmp_path, "--format", "p12")
    cafile = home / "pki" / "ca.crt"
    lon, lat = CENTRE
    osmand = f"{service.base}/?id=T4&lat={lat}&lon={lon}&token={tokens['T4']}&timestamp="
    assert requests.get(osmand + str(int(time.time()) - 60), verify=home / "operator" / "tls.crt",
                        timeout=10).status_code == 200
    dropped = service.stats()["cot"]["dropped"].get("revoked", 0)

    async def scenario() -> tuple[bool, bool, bool, float]:
        config = pytak_config(service.cot_tls_port, tmp_path / "T4.p12", password, cafile)
        tls_reader, tls_writer = await pytak.protocol_factory(config)
        await pytak.TXWorker(asyncio.Queue(), config, tls_writer).send_data(cot_event("T4", 30, lon, lat))
        plain_reader, plain_writer = await asyncio.open_connection("127.0.0.1", service.cot_port)
        plain_writer.write(cot_event("T4", 25, lon, lat, token=tokens["T4"]))
        await plain_writer.drain()
        stored = await wait_rows(db_url, FIXES, ("T4",), 3)
        assert len(stored) == 3, stored  # OsmAnd, TLS and plain CoT: both connections are in
        revoked_at = time.monotonic()
        await asyncio.to_thread(gridwatch, home, db_url, "devices", "revoke", "T4")
        tls_closed, plain_closed = await asyncio.gather(
            closed_by_server(tls_reader, within_s=REVOKED_WITHIN_S),
            closed_by_server(plain_reader, within_s=REVOKED_WITHIN_S))
        took = time.monotonic() - revoked_at
        tls_writer.close()
        plain_writer.close()
        reader, writer = await pytak.protocol_factory(config)
        await pytak.TXWorker(asyncio.Queue(), config, writer).send_data(cot_event("T4", 5, lon, lat))
        again_closed = await closed_by_server(reader, within_s=10)
        writer.close()
        return tls_closed, plain_closed, again_closed, took

    tls_closed, plain_closed, again_closed, took = asyncio.run(scenario())
    assert (tls_closed, plain_closed, again_closed) == (True, True, True), f"after {took:.1f} s"
    assert requests.get(osmand + str(int(time.time()) - 5), verify=home / "operator" / "tls.crt",
                        timeout=10).status_code == 403
    assert service.stats()["cot"]["dropped"]["revoked"] == dropped + 2
    assert len(rows(db_url, FIXES, ("T4",))) == 3
    listing = gridwatch(home, db_url, "devices", "list").stdout
    assert re.search(r"^T4 .* no +- +- +\d{4}-\d\d-\d\d \d\d:\d\d$", listing, re.M), listing


# -- HTTPS ----------------------------------------------------------------------------
def test_osmand_over_https_on_the_ingest_http_port(live: tuple, db_url: str) -> None:
    service, tokens, home = live
    lon, lat = CENTRE
    query = f"/?id=T5&lat={lat}&lon={lon}&timestamp={int(time.time()) - 30}&token={tokens['T5']}"
    done = subprocess.run(["curl", "-sS", "--max-time", "10", "--cacert", str(home / "operator" / "tls.crt"),
                           "-o", "/dev/null", "-w", "%{http_code}", service.base + query],
                          capture_output=True, text=True, timeout=20)
    assert done.stdout == "200", done.stderr
    plain = subprocess.run(["curl", "-sS", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code}",
                            f"http://127.0.0.1:{service.http_port}{query}"], capture_output=True, text=True, timeout=20)
    assert plain.stdout != "200"
    service.wait_drained()
    assert rows(db_url, FIXES, ("T5",)) == [("osmand",)]


def test_plain_cot_can_be_switched_off(db_url: str, tmp_path: Path) -> None:
    service = IngestProcess(db_url, tmp_path, "--cot-port", "0").start()
    try:
        assert "plain CoT off" in service.log.read_text()
        with pytest.raises(ConnectionRefusedError):
            asyncio.run(asyncio.open_connection("127.0.0.1", service.cot_port))
    finally:
        service.stop()


@pytest.fixture
def tls_files(tmp_path: Path) -> dict[str, Path]:
    """A good pair, a key readable by others, and another certificate."""
    cert, key = operator_cert(tmp_path / "good")
    _, loose = operator_cert(tmp_path / "loose", key_mode=0o644)
    other, _ = operator_cert(tmp_path / "other")
    return {"cert": cert, "key": key, "loose": loose, "other": other, "missing": tmp_path / "missing.crt"}


@pytest.mark.parametrize(("cert", "key", "message"), [
    ("cert", "loose", r"may be read by group or others \(mode 644\): chmod 600 "),
    ("missing", "key", r"the TLS certificate .*missing\.crt does not exist"),
    ("other", "key", r"is not the certificate of the key"),
    ("cert", None, r"give --tls-cert and --tls-key together"),
], ids=["key-mode-644", "missing-cert", "mismatched", "cert-without-key"])
@pytest.mark.parametrize("command", ["serve", "ingest"])
def test_bad_tls_material_is_refused_in_one_line(db_url: str, tmp_path: Path, tls_files: dict[str, Path],
                                                 command: str, cert: str, key: str | None, message: str) -> None:
    args = ["--tls-cert", str(tls_files[cert]), *(["--tls-key", str(tls_files[key])] if key else [])]
    port = ["--port", str(free_port())] if command == "serve" else ["--http-port", str(free_port()), "--cot-port",
                                                                    str(free_port()), "--cot-tls-port", "0"]
    done = gridwatch(tmp_path / "home", db_url, command, *port, *args, check=False)
    assert done.returncode != 0 and re.search(message, done.stderr), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    if key == "loose":
        assert done.returncode == 1


def https_status(port: int, cafile: Path | None) -> tuple[int, str | None]:
    """The status and Strict-Transport-Security header of ``GET /style.json`` over HTTPS, trusting
    ``cafile`` (None: the system's CAs); the connection is closed afterwards, as a client that is
    done closes it."""
    context = ssl.create_default_context(cafile=cafile)
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    try:
        connection.request("GET", "/style.json")
        response = connection.getresponse()
        return response.status, response.getheader("Strict-Transport-Security")
    finally:
        connection.close()


def test_serve_answers_https_with_a_certificate(db_url: str, tmp_path: Path, tls_files: dict[str, Path]) -> None:
    port = free_port()
    env = {**os.environ, "GRIDWATCH_DATABASE_URL": db_url, "GRIDWATCH_HOME": str(tmp_path / "home")}
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "gridwatch.cli", "serve", "--port", str(port), "--tls-cert",
                                 str(tls_files["cert"]), "--tls-key", str(tls_files["key"])], env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        deadline, status = time.monotonic() + 60, None
        while status is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                status = https_status(port, tls_files["cert"])
            except ConnectionRefusedError:
                time.sleep(0.2)
        assert status == (401, "max-age=31536000"), log.read_text()  # data needs a session; HTTPS is kept to
        with pytest.raises(ssl.SSLCertVerificationError):  # only a client that trusts the certificate gets in
            https_status(port, None)
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
