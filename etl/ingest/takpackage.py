"""What a TAK client imports to report over TLS: PKCS#12 files and a TAK data package.

The device's ``.p12`` holds its key, its certificate and the CA certificate; the truststore ``.p12``
holds the CA certificate alone. Both are encrypted the way ATAK's Android key store and WinTAK read
them (PBES1 with SHA-1 and 3DES, SHA-1 MAC: what TAK Server exports; OpenSSL 3's default AES
encryption is refused by ATAK), under one password.

The data package is a zip ATAK and WinTAK import in one step (Import → Local SD, or open it):
``MANIFEST/manifest.xml`` lists ``certs/gridwatch.pref`` (the server connection ``host:port:ssl``,
where the certificates land, their password, and the callsign) and the two ``.p12`` files. As with
TAK Server's packages the password is inside, so the package is as secret as the key.
"""
from __future__ import annotations

import io
import re
import uuid
import zipfile
from xml.etree import ElementTree as ET

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import PrivateFormat, pkcs12

from gridwatch.etl.ingest.pki import Issued

__all__ = ["device_p12", "truststore_p12", "data_package", "file_stem", "TRUSTSTORE_NAME"]

TRUSTSTORE_NAME = "gridwatch-ca.p12"
PREF_NAME = "gridwatch.pref"


def file_stem(callsign: str) -> str:
    """``callsign`` as a file name: letters, digits, ``.``, ``_`` and ``-``; any other character as ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", callsign).lstrip(".") or "device"


def _encryption(password: str):
    return (PrivateFormat.PKCS12.encryption_builder().kdf_rounds(50_000)
            .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC).hmac_hash(hashes.SHA1())
            .build(password.encode("utf-8")))


def device_p12(issued: Issued, ca: x509.Certificate, callsign: str, password: str) -> bytes:
    """The device's key, certificate and the CA certificate, under ``password``."""
    return pkcs12.serialize_key_and_certificates(
        callsign.encode("utf-8"), issued.key, issued.cert, [pkcs12.PKCS12Certificate(ca, b"gridwatch-ca")],
        _encryption(password))


def truststore_p12(ca: x509.Certificate, password: str) -> bytes:
    """The CA certificate alone: what a TAK client trusts the service's certificate by."""
    return pkcs12.serialize_key_and_certificates(
        None, None, None, [pkcs12.PKCS12Certificate(ca, b"gridwatch-ca")], _encryption(password))


def _pref(callsign: str, *, host: str, port: int, client_name: str, password: str) -> bytes:
    """The connection preferences: one TLS CoT stream, the certificates and their password."""
    root = ET.Element("preferences")
    entries = (
        ("cot_streams", [("count", "Integer", "1"), ("description0", "String", f"gridwatch {host}"),
                         ("enabled0", "Boolean", "true"), ("connectString0", "String", f"{host}:{port}:ssl")]),
        ("com.atakmap.app_preferences", [
            ("displayServerConnectionWidget", "Boolean", "true"),
            ("caLocation", "String", f"cert/{TRUSTSTORE_NAME}"), ("caPassword", "String", password),
            ("certificateLocation", "String", f"cert/{client_name}"), ("clientPassword", "String", password),
            ("locationCallsign", "String", callsign)]),
    )
    for name, items in entries:
        preference = ET.SubElement(root, "preference", version="1", name=name)
        for key, kind, value in items:
            ET.SubElement(preference, "entry", key=key, **{"class": f"class java.lang.{kind}"}).text = value
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def _manifest(callsign: str, entries: list[str]) -> bytes:
    root = ET.Element("MissionPackageManifest", version="2")
    configuration = ET.SubElement(root, "Configuration")
    for name, value in (("uid", str(uuid.uuid4())), ("name", f"gridwatch {callsign}"),
                        ("onReceiveImport", "true"), ("onReceiveDelete", "true")):
        ET.SubElement(configuration, "Parameter", name=name, value=value)
    contents = ET.SubElement(root, "Contents")
    for entry in entries:
        ET.SubElement(contents, "Content", ignore="false", zipEntry=entry)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def data_package(issued: Issued, ca: x509.Certificate, callsign: str, *, host: str, port: int,
                 password: str) -> bytes:
    """The TAK data package (zip) that connects a TAK client to ``host:port`` over TLS as ``callsign``."""
    client_name = f"{file_stem(callsign)}.p12"
    files = {
        f"certs/{PREF_NAME}": _pref(callsign, host=host, port=port, client_name=client_name, password=password),
        f"certs/{client_name}": device_p12(issued, ca, callsign, password),
        f"certs/{TRUSTSTORE_NAME}": truststore_p12(ca, password),
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("MANIFEST/manifest.xml", _manifest(callsign, list(files)))
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()
