"""swm_edge.cert: the gateway's key, its signing request and checks of the issued certificate."""

from __future__ import annotations

import datetime
import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from swm_edge.cert import (
    KEY_TYPES,
    CertError,
    PrivateKey,
    build_csr,
    generate_key,
    inspect_certificate,
    load_private_key,
    sha256_fingerprint,
    write_csr,
    write_private_key,
)

NOW = datetime.datetime.now(datetime.UTC)


def make_ca() -> tuple[ec.EllipticCurvePrivateKey, x509.Name]:
    key = ec.generate_private_key(ec.SECP256R1())
    return key, x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Utility Test CA")])


def issue(
    public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
    subject: x509.Name,
    *,
    days_left: float,
    valid_from: datetime.timedelta = datetime.timedelta(days=-30),
) -> x509.Certificate:
    """A client certificate signed by a fresh test CA, expiring ``days_left`` days from now."""
    ca_key, ca_name = make_ca()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW + valid_from)
        .not_valid_after(NOW + datetime.timedelta(days=days_left))
        .sign(ca_key, hashes.SHA256())
    )


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "gw.key"
    write_private_key(path, generate_key())
    return path


def test_key_file_is_0600_from_creation_even_with_an_open_umask(tmp_path: Path) -> None:
    path = tmp_path / "gw.key"
    old = os.umask(0)  # the widest umask: the mode must still be 0600
    try:
        write_private_key(path, generate_key())
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = load_private_key(path)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert path.read_text().startswith("-----BEGIN PRIVATE KEY-----")  # PKCS#8, unencrypted


def test_existing_key_is_kept_unless_replace(tmp_path: Path, key_file: Path) -> None:
    original = key_file.read_bytes()
    with pytest.raises(CertError, match=r"already exists.*--reuse-key.*--force"):
        write_private_key(key_file, generate_key())
    assert key_file.read_bytes() == original
    write_private_key(key_file, generate_key(), replace=True)
    assert key_file.read_bytes() != original
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gw.key"]  # no temporary left


def test_key_in_a_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(CertError, match="does not exist; create it first"):
        write_private_key(tmp_path / "nope" / "gw.key", generate_key())


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_csr_verifies_and_names_the_gateway(tmp_path: Path, key_type: str) -> None:
    key = generate_key(key_type)
    csr = build_csr(key, "gw-lima-0001", "lima-d3")
    assert csr.is_signature_valid
    cn = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    ou = csr.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    assert [a.value for a in cn] == ["gw-lima-0001"] and [a.value for a in ou] == ["lima-d3"]
    assert csr.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    eku = csr.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    path = tmp_path / "gw.csr"
    write_csr(path, csr)
    again = x509.load_pem_x509_csr(path.read_bytes())
    assert again.is_signature_valid and again.subject == csr.subject


def test_csr_without_site_has_no_ou() -> None:
    csr = build_csr(generate_key(), "gw-1")
    assert csr.subject.rfc4514_string() == "CN=gw-1"


def test_fingerprint_is_sha256_with_colons() -> None:
    der = b"\x30\x03\x02\x01\x01"
    fp = sha256_fingerprint(der)
    assert fp.replace(":", "").lower() == hashlib.sha256(der).hexdigest()
    assert len(fp.split(":")) == 32 and fp == fp.upper()


def _cert_for(tmp_path: Path, key: PrivateKey, days_left: float, **kw: object) -> Path:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gw-lima-0001")])
    cert = issue(key.public_key(), subject, days_left=days_left, **kw)  # type: ignore[arg-type]
    path = tmp_path / f"cert-{days_left}.pem"
    path.write_bytes(pem(cert))
    return path


@pytest.fixture
def key(key_file: Path) -> Iterator[PrivateKey]:
    yield load_private_key(key_file)


def test_ten_days_left_warns(tmp_path: Path, key_file: Path, key: PrivateKey) -> None:
    report = inspect_certificate(_cert_for(tmp_path, key, 10), key_file)
    assert report.errors == []
    assert len(report.warnings) == 1 and "expires in 9 days" in report.warnings[0]
    assert report.days_left == 9  # 9 days and 23 h and some
    assert report.key_matches is True
    assert report.subject == "CN=gw-lima-0001" and report.issuer == "CN=Utility Test CA"


def test_four_hundred_days_left_is_fine(tmp_path: Path, key_file: Path, key: PrivateKey) -> None:
    report = inspect_certificate(_cert_for(tmp_path, key, 400), key_file)
    assert (report.errors, report.warnings, report.days_left) == ([], [], 399)
    assert report.not_after > NOW + datetime.timedelta(days=399)


def test_expired_is_an_error(tmp_path: Path, key_file: Path, key: PrivateKey) -> None:
    report = inspect_certificate(_cert_for(tmp_path, key, -1.5), key_file)
    assert len(report.errors) == 1 and "expired on" in report.errors[0]
    assert report.days_left == -2  # whole days, rounded down


def test_not_yet_valid_is_an_error(tmp_path: Path, key_file: Path, key: PrivateKey) -> None:
    path = _cert_for(tmp_path, key, 400, valid_from=datetime.timedelta(days=2))
    report = inspect_certificate(path, key_file)
    assert len(report.errors) == 1 and "clock" in report.errors[0]


def test_certificate_of_another_key_is_an_error(tmp_path: Path, key_file: Path) -> None:
    report = inspect_certificate(_cert_for(tmp_path, generate_key(), 400), key_file)
    assert report.key_matches is False
    assert len(report.errors) == 1 and "does not belong to the key" in report.errors[0]


def test_unreadable_key_is_only_a_warning(tmp_path: Path, key: PrivateKey) -> None:
    cert = _cert_for(tmp_path, key, 400)
    report = inspect_certificate(cert, tmp_path / "missing.key")
    assert report.errors == [] and report.key_matches is None
    assert "not checked" in report.warnings[0] and "no such file" in report.warnings[0]
    assert inspect_certificate(cert).key_problem == "no key given"


def test_chain_file_reports_the_first_certificate(tmp_path: Path, key: PrivateKey) -> None:
    leaf = _cert_for(tmp_path, key, 400)
    ca_key, ca_name = make_ca()
    other = issue(ca_key.public_key(), ca_name, days_left=1000)
    chain = tmp_path / "chain.pem"
    chain.write_bytes(leaf.read_bytes() + pem(other))
    report = inspect_certificate(chain)
    assert report.chain_length == 2 and report.subject == "CN=gw-lima-0001"


def test_der_certificate_is_read(tmp_path: Path, key: PrivateKey) -> None:
    cert = x509.load_pem_x509_certificate(_cert_for(tmp_path, key, 400).read_bytes())
    der = tmp_path / "cert.der"
    der.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    assert inspect_certificate(der).fingerprint_sha256 == sha256_fingerprint(der.read_bytes())


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(CertError, match="no such file"):
        inspect_certificate(tmp_path / "nope.pem")
    (tmp_path / "junk.pem").write_text("hello")
    with pytest.raises(CertError, match="not a PEM or DER certificate"):
        inspect_certificate(tmp_path / "junk.pem")
    with pytest.raises(CertError, match="is a folder"):
        inspect_certificate(tmp_path)
    with pytest.raises(CertError, match="not a PEM private key"):
        load_private_key(tmp_path / "junk.pem")
    encrypted = tmp_path / "enc.key"
    encrypted.write_bytes(
        generate_key().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(CertError, match="encrypted"):
        load_private_key(encrypted)
