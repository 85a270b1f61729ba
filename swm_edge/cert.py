"""The gateway's TLS client identity: private key, certificate signing request, certificate.

Brokers that authenticate gateways by mutual TLS need a certificate per gateway from the
utility's PKI. The key is made on the gateway and never leaves it: :func:`generate_key` and
:func:`write_private_key` create it (mode 0600 from the moment the file exists),
:func:`build_csr` makes the request the PKI signs, with the gateway id as the common name.
:func:`inspect_certificate` checks what came back: validity, days left, and whether it
belongs to the key.

Every user-facing problem is a :class:`CertError` whose message says what to do.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "DEFAULT_KEY_TYPE",
    "KEY_TYPES",
    "WARN_DAYS",
    "CertError",
    "CertificateReport",
    "PrivateKey",
    "build_csr",
    "describe_key",
    "generate_key",
    "inspect_certificate",
    "load_private_key",
    "sha256_fingerprint",
    "write_csr",
    "write_private_key",
]

#: Key algorithms ``swm-edge cert request --key-type`` offers. EC P-256 is the default: fast
#: on a Raspberry Pi, small handshakes, accepted by every current broker and PKI; RSA is
#: there for PKIs that still insist on it.
KEY_TYPES = ("ec-p256", "ec-p384", "rsa-2048", "rsa-3072")
DEFAULT_KEY_TYPE = "ec-p256"
#: A certificate with fewer days left than this gets a warning (time to request a new one).
WARN_DAYS = 30

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


class CertError(Exception):
    """A key, request or certificate problem; the message names the file and the fix."""


def generate_key(key_type: str = DEFAULT_KEY_TYPE) -> PrivateKey:
    """A new private key of one of :data:`KEY_TYPES`."""
    if key_type == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ec-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if key_type in ("rsa-2048", "rsa-3072"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type[4:]))
    raise ValueError(f"unknown key type {key_type!r}; one of {', '.join(KEY_TYPES)}")


def describe_key(key: PrivateKey) -> str:
    """``EC P-256``, ``RSA 2048``... for messages."""
    if isinstance(key, rsa.RSAPrivateKey):
        return f"RSA {key.key_size}"
    names = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
    return f"EC {names.get(key.curve.name, key.curve.name)}"


def _fsync_folder(folder: Path) -> None:
    # The new directory entry must survive a power cut as well as the file's contents.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _check_folder(path: Path) -> None:
    folder = path.parent
    if not folder.is_dir():
        raise CertError(
            f"{path}: the folder {folder} does not exist; create it first "
            f"(e.g. `install -d -m 0750 {folder}`) or give another path"
        )


def write_private_key(path: Path, key: PrivateKey, *, replace: bool = False) -> None:
    """Write ``key`` unencrypted as PKCS#8 PEM to ``path``, mode 0600 from creation.

    The file is created with ``os.open(..., 0o600)``, so no other user can open it even for
    a moment. An existing file is replaced only when ``replace`` is true, and then
    atomically (written under a temporary name and renamed), so a power cut leaves the old
    key or the new one, never half of one. The agent reads the key unattended, hence no
    passphrase.

    Raises:
        CertError: the file exists (without ``replace``), its folder is missing, or it
            cannot be written.
    """
    path = Path(path)
    _check_folder(path)
    exists = path.exists() or path.is_symlink()
    if exists and not replace:
        raise CertError(
            f"{path} already exists; a new key makes the certificate issued for it useless. "
            "Keep it and use --reuse-key to request a certificate for it, or --force to "
            "replace it"
        )
    if path.is_dir():
        raise CertError(f"{path} is a folder; give the path of the key file")
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    target = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp") if exists else path
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(target, flags, 0o600)
        try:
            # The umask can only take bits away from 0600; this makes the mode exact.
            os.fchmod(fd, 0o600)
            view = memoryview(pem)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if exists:
            os.replace(target, path)
    except FileExistsError:
        raise CertError(f"{path} was created by someone else meanwhile; try again") from None
    except OSError as exc:
        with contextlib.suppress(OSError):
            if exists:
                target.unlink()
        raise CertError(
            f"{path}: cannot write the key ({exc.strerror or exc}); run as root or give "
            "--key a writable path"
        ) from None
    _fsync_folder(path.parent)


def _read(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise CertError(f"{path}: no such file ({what}); check the path") from None
    except IsADirectoryError:
        raise CertError(f"{path}: is a folder, not the {what} file") from None
    except PermissionError:
        raise CertError(
            f"{path}: permission denied reading the {what}; run as root or as the agent's user"
        ) from None
    except OSError as exc:
        raise CertError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None


def load_private_key(path: Path) -> PrivateKey:
    """The unencrypted EC or RSA private key in the PEM file ``path``.

    Raises:
        CertError: missing, unreadable, encrypted, not a key, or another algorithm.
    """
    data = _read(path, "private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise CertError(
            f"{path}: the key is encrypted with a passphrase; the agent needs it unencrypted "
            "(`openssl pkey -in KEY -out KEY.plain`, then keep that one 0600)"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise CertError(f"{path}: not a PEM private key") from None
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise CertError(f"{path}: a {type(key).__name__}; swm-edge uses EC or RSA keys")
    return key


def build_csr(
    key: PrivateKey, gateway_id: str, site: str | None = None
) -> x509.CertificateSigningRequest:
    """A certificate signing request for ``key``: CN = ``gateway_id``, OU = ``site`` if given.

    It asks for a TLS client certificate (extended key usage clientAuth), signed with SHA-256.
    """
    attributes = []
    if site:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, site))
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, gateway_id))
    usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        # RSA TLS 1.2 key exchange encrypts with the key; EC keys only sign.
        key_encipherment=isinstance(key, rsa.RSAPrivateKey),
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name(attributes))
        .add_extension(usage, critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )


def write_csr(path: Path, csr: x509.CertificateSigningRequest) -> None:
    """Write ``csr`` as PEM (public: the usual file mode), replacing an older request."""
    path = Path(path)
    _check_folder(path)
    try:
        path.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    except OSError as exc:
        raise CertError(
            f"{path}: cannot write the request ({exc.strerror or exc}); give --csr a writable path"
        ) from None


def sha256_fingerprint(der: bytes) -> str:
    """SHA-256 of ``der`` as colon-separated hex, as ``openssl ... -fingerprint`` prints it."""
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


@dataclass(frozen=True)
class CertificateReport:
    """What :func:`inspect_certificate` found.

    ``days_left`` is whole days until ``not_after``, rounded down (negative once expired).
    ``key_matches`` is None when no key was checked; ``key_problem`` then says why (no key
    given, or it could not be read). ``errors`` make the certificate unusable (expired, not
    yet valid, not the key's); ``warnings`` do not (expires within :data:`WARN_DAYS`, key not
    checked).
    """

    path: Path
    subject: str
    issuer: str
    serial: str
    not_before: datetime.datetime
    not_after: datetime.datetime
    days_left: int
    fingerprint_sha256: str
    key_path: Path | None
    key_matches: bool | None
    key_problem: str | None
    chain_length: int
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _load_certificates(path: Path) -> list[x509.Certificate]:
    data = _read(path, "certificate")
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificates(data)
        return [x509.load_der_x509_certificate(data)]
    except ValueError:
        raise CertError(f"{path}: not a PEM or DER certificate") from None


def _public_der(key: PrivateKey | x509.Certificate) -> bytes:
    public = key.public_key()
    return public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def inspect_certificate(
    cert_path: Path,
    key_path: Path | None = None,
    *,
    now: datetime.datetime | None = None,
    warn_days: int = WARN_DAYS,
) -> CertificateReport:
    """Read the certificate at ``cert_path`` (the first of a PEM chain) and judge it.

    With ``key_path`` it also checks that the certificate is the key's (same public key);
    a key that cannot be read is a warning, not an error, so the certificate can still be
    looked at by a user who may not read the key.

    Raises:
        CertError: the certificate file is missing, unreadable or not a certificate.
    """
    chain = _load_certificates(cert_path)
    cert = chain[0]
    moment = now or datetime.datetime.now(datetime.UTC)
    not_before, not_after = cert.not_valid_before_utc, cert.not_valid_after_utc
    days_left = int((not_after - moment).total_seconds() // 86400)
    errors: list[str] = []
    warnings: list[str] = []
    until = not_after.strftime("%Y-%m-%d %H:%M UTC")
    if moment >= not_after:
        errors.append(
            f"the certificate expired on {until}; request a new one "
            "(swm-edge cert request --reuse-key) and put it in place"
        )
    elif moment < not_before:
        errors.append(
            f"the certificate is not valid before {not_before:%Y-%m-%d %H:%M UTC}; "
            "is this gateway's clock right?"
        )
    elif days_left < warn_days:
        warnings.append(
            f"the certificate expires in {days_left} days ({until}); request a new one now "
            "(swm-edge cert request --reuse-key)"
        )
    key_matches: bool | None = None
    key_problem: str | None = None
    if key_path is None:
        key_problem = "no key given"
    else:
        try:
            key = load_private_key(key_path)
        except CertError as exc:
            key_problem = str(exc)
            warnings.append(f"the key was not checked: {exc}")
        else:
            key_matches = _public_der(key) == _public_der(cert)
            if not key_matches:
                errors.append(
                    f"the certificate does not belong to the key {key_path}: the broker will "
                    "refuse the connection. Put the certificate issued for this key in place"
                )
    return CertificateReport(
        path=Path(cert_path),
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        serial=f"{cert.serial_number:X}",
        not_before=not_before,
        not_after=not_after,
        days_left=days_left,
        fingerprint_sha256=sha256_fingerprint(cert.public_bytes(serialization.Encoding.DER)),
        key_path=key_path,
        key_matches=key_matches,
        key_problem=key_problem,
        chain_length=len(chain),
        errors=errors,
        warnings=warnings,
    )
