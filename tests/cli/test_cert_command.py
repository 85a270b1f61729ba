"""``swm-edge cert request | show`` as a user runs them, checked with the cryptography library."""

from __future__ import annotations

import datetime
import hashlib
import json
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from swm_edge.cert import KEY_TYPES
from swm_edge.cli.cert import _KEY_TYPES

GATEWAY = "gw-lima-0001"
NOW = datetime.datetime.now(datetime.UTC)


def swm_edge(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "swm_edge", *(str(a) for a in args)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def write_config(folder: Path, tls: str = "", site: str = ", site: lima-d3") -> Path:
    config = folder / "config.yaml"
    config.write_text(
        f"gateway: {{id: {GATEWAY}{site}}}\n"
        f"mqtt: {{host: 127.0.0.1{', tls: ' + tls if tls else ''}}}\n"
        f"buffer: {{path: {folder / 'buffer.sqlite'}}}\n"
    )
    return config


def public_der(key: object) -> bytes:
    return key.public_key().public_bytes(  # type: ignore[attr-defined,no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def sign(csr: x509.CertificateSigningRequest, days_left: float) -> bytes:
    """What the utility's PKI does: a certificate for the CSR's key and subject, by a test CA."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Utility Test CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(csr.subject)
        .issuer_name(ca)
        .public_key(csr.public_key())  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(days=30))
        .not_valid_after(NOW + datetime.timedelta(days=days_left))
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def test_key_type_choices_match_the_library() -> None:
    assert _KEY_TYPES == KEY_TYPES


@pytest.fixture
def tls_config(tmp_path: Path) -> Path:
    folder = tmp_path / "etc"
    folder.mkdir()
    tls = f"{{cert_file: {folder / 'client.pem'}, key_file: {folder / 'client.key'}}}"
    return write_config(folder, tls)


def test_request_makes_a_0600_key_and_a_verifiable_csr(tls_config: Path) -> None:
    folder = tls_config.parent
    result = swm_edge("cert", "request", "--config", tls_config)
    assert result.returncode == 0, result.stderr
    key_path, csr_path = folder / "client.key", folder / "client.csr"
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    csr = x509.load_pem_x509_csr(csr_path.read_bytes())
    assert csr.is_signature_valid
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == GATEWAY
    assert csr.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == (
        "lima-d3"
    )
    assert public_der(csr) == public_der(key)
    # the CSR's path and its fingerprint are printed; no part of the key ever is
    der = csr.public_bytes(serialization.Encoding.DER)
    fingerprint = hashlib.sha256(der).hexdigest().upper()
    printed = re.search(r"sha256\s+([0-9A-F:]+)", result.stdout)
    assert printed and printed.group(1).replace(":", "") == fingerprint
    assert str(csr_path) in result.stdout
    output = result.stdout + result.stderr
    assert "PRIVATE KEY" not in output
    for line in key_path.read_text().splitlines()[1:-1]:
        assert line not in output
    assert "mqtt.tls.key_file" not in output  # the key is where the config expects it


def test_existing_key_needs_force_and_reuse_key_keeps_it(tls_config: Path) -> None:
    key_path = tls_config.parent / "client.key"
    assert swm_edge("cert", "request", "-c", tls_config).returncode == 0
    first = key_path.read_bytes()

    again = swm_edge("cert", "request", "-c", tls_config)
    assert again.returncode == 1 and "Traceback" not in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1 and "--force" in again.stderr
    assert key_path.read_bytes() == first

    renew = swm_edge("cert", "request", "-c", tls_config, "--reuse-key")
    assert renew.returncode == 0, renew.stderr
    assert key_path.read_bytes() == first and "existing" in renew.stdout
    csr = x509.load_pem_x509_csr((tls_config.parent / "client.csr").read_bytes())
    assert public_der(csr) == public_der(serialization.load_pem_private_key(first, password=None))

    forced = swm_edge("cert", "request", "-c", tls_config, "--force", "--key-type", "rsa-2048")
    assert forced.returncode == 0, forced.stderr
    assert key_path.read_bytes() != first
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert "RSA 2048" in forced.stdout
    both = swm_edge("cert", "request", "-c", tls_config, "--force", "--reuse-key")
    assert both.returncode == 2


def test_default_paths_next_to_the_config_and_explicit_ones(tmp_path: Path) -> None:
    config = write_config(tmp_path, site="")
    result = swm_edge("cert", "request", "--config", config)
    assert result.returncode == 0, result.stderr
    key_path, csr_path = tmp_path / f"{GATEWAY}.key", tmp_path / f"{GATEWAY}.csr"
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    csr = x509.load_pem_x509_csr(csr_path.read_bytes())
    assert csr.subject.rfc4514_string() == f"CN={GATEWAY}"  # no site, no OU
    assert f"mqtt.tls.key_file: {key_path}" in result.stdout  # how to make the agent use it

    key2, csr2 = tmp_path / "k" / "a.pem", tmp_path / "req.txt"
    (tmp_path / "k").mkdir()
    result = swm_edge("cert", "request", "-c", config, "--key", key2, "--csr", csr2)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(key2.stat().st_mode) == 0o600
    assert x509.load_pem_x509_csr(csr2.read_bytes()).is_signature_valid


def test_request_errors_are_one_line(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    missing = swm_edge("cert", "request", "-c", config, "--key", tmp_path / "no" / "gw.key")
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1 and "create it first" in missing.stderr
    same = swm_edge("cert", "request", "-c", config, "--key", config, "--csr", config)
    assert same.returncode == 2 and "same file" in same.stderr
    nothing = swm_edge("cert", "request", "-c", config, "--reuse-key")
    assert nothing.returncode == 1 and "no such file" in nothing.stderr
    bad = swm_edge("cert", "request", "-c", tmp_path / "nope.yaml")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def issued(tls_config: Path, days_left: float) -> Path:
    """Request, then put a certificate signed by a test CA where the config expects it."""
    if not (tls_config.parent / "client.key").exists():
        assert swm_edge("cert", "request", "-c", tls_config).returncode == 0
    csr = x509.load_pem_x509_csr((tls_config.parent / "client.csr").read_bytes())
    cert = tls_config.parent / "client.pem"
    cert.write_bytes(sign(csr, days_left))
    return cert


def test_show_with_400_days_left(tls_config: Path) -> None:
    issued(tls_config, 400)
    result = swm_edge("cert", "show", "--config", tls_config)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert f"CN={GATEWAY},OU=lima-d3" in result.stdout
    assert "CN=Utility Test CA" in result.stdout
    assert "399 days left" in result.stdout and "matches" in result.stdout


def test_show_with_10_days_left_warns_and_exits_0(tls_config: Path) -> None:
    issued(tls_config, 10)
    result = swm_edge("cert", "show", "--config", tls_config)
    assert result.returncode == 0, result.stderr
    assert re.search(r"^warning: the certificate expires in 9 days", result.stderr, re.M)
    doc = json.loads(swm_edge("cert", "show", "-c", tls_config, "--json").stdout)
    assert doc["days_left"] == 9 and doc["ok"] is True and len(doc["warnings"]) == 1
    assert doc["key"] == {
        "path": str(tls_config.parent / "client.key"),
        "matches": True,
        "problem": None,
    }
    assert doc["subject"] == f"CN={GATEWAY},OU=lima-d3" and doc["issuer"] == "CN=Utility Test CA"
    not_after = datetime.datetime.fromisoformat(doc["not_after"])
    assert abs(not_after - (NOW + datetime.timedelta(days=10))) < datetime.timedelta(seconds=2)


def test_show_expired_exits_1(tls_config: Path) -> None:
    issued(tls_config, -2.5)
    result = swm_edge("cert", "show", "--config", tls_config)
    assert result.returncode == 1
    assert "(expired 2 days ago)" in result.stdout
    assert re.search(r"^error: the certificate expired on", result.stderr, re.M)
    assert "Traceback" not in result.stderr
    doc = json.loads(swm_edge("cert", "show", "-c", tls_config, "--json").stdout)
    assert doc["ok"] is False and doc["days_left"] == -3  # whole days, rounded down


def test_show_with_the_wrong_key_exits_1(tls_config: Path) -> None:
    issued(tls_config, 400)
    # a new key replaces the one the certificate was issued for
    assert swm_edge("cert", "request", "-c", tls_config, "--force").returncode == 0
    result = swm_edge("cert", "show", "--config", tls_config)
    assert result.returncode == 1
    assert "DOES NOT MATCH" in result.stdout
    assert re.search(r"^error: the certificate does not belong to the key", result.stderr, re.M)


def test_show_a_certificate_file_alone(tls_config: Path, tmp_path: Path) -> None:
    cert = issued(tls_config, 400)
    result = swm_edge("cert", "show", "--cert", cert)
    assert result.returncode == 0, result.stderr
    assert "not checked (no key given)" in result.stdout
    other = tmp_path / "other.key"
    other.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    assert swm_edge("cert", "show", "--cert", cert, "--key", other).returncode == 1


def test_show_errors(tmp_path: Path) -> None:
    config = write_config(tmp_path)  # no mqtt.tls
    unset = swm_edge("cert", "show", "--config", config)
    assert unset.returncode == 2 and "mqtt.tls.cert_file is not set" in unset.stderr
    for path, message in (
        (tmp_path / "nope.pem", "no such file"),
        (config, "not a PEM or DER certificate"),
    ):
        result = swm_edge("cert", "show", "--cert", path)
        assert result.returncode == 1 and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr
    folder = swm_edge("cert", "show", "--cert", tmp_path)
    assert folder.returncode == 2 and "is a directory" in folder.stderr
