"""``swm-edge cert request | show``: the gateway's TLS client key and certificate.

``request`` makes the key on the gateway (it never leaves it) and a signing request for the
utility's PKI; ``show`` checks the certificate that came back. The private key is never
printed. ``cryptography`` is imported only when one of these commands runs, so it does not
slow every other command's start on a small gateway.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click
from click.core import ParameterSource

from swm_edge.cli import config_option, load_or_exit

if TYPE_CHECKING:
    from swm_edge.cert import CertificateReport

__all__ = ["cert"]

# The choices of --key-type, kept here so that --help does not import cryptography;
# tests check they equal swm_edge.cert.KEY_TYPES.
_KEY_TYPES = ("ec-p256", "ec-p384", "rsa-2048", "rsa-3072")


@click.group()
def cert() -> None:
    """The gateway's TLS client key and certificate (mutual TLS towards the broker)."""


def _fail(message: str) -> NoReturn:
    click.echo(f"swm-edge: {message}", err=True)
    sys.exit(1)


@cert.command()
@config_option
@click.option(
    "--key",
    "key_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Private key file to create (default: mqtt.tls.key_file, else <gateway id>.key "
    "next to the config).",
)
@click.option(
    "--csr",
    "csr_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Signing request to write (default: the key's path with .csr).",
)
@click.option("--force", is_flag=True, help="Replace an existing key (its certificate then dies).")
@click.option(
    "--reuse-key",
    is_flag=True,
    help="Keep the existing key and only make a new request for it (renewal).",
)
@click.option(
    "--key-type",
    type=click.Choice(_KEY_TYPES),
    default="ec-p256",
    show_default=True,
    help="Algorithm of a new key.",
)
def request(
    config_path: Path,
    key_path: Path | None,
    csr_path: Path | None,
    force: bool,
    reuse_key: bool,
    key_type: str,
) -> None:
    """Create the gateway's private key (mode 0600) and a certificate signing request.

    The request names the gateway id as CN (and the site as OU); send the .csr file to the
    utility's PKI and compare the SHA-256 fingerprint printed here with theirs. The key is
    never printed.
    """
    from cryptography.hazmat.primitives.serialization import Encoding

    from swm_edge.cert import (
        CertError,
        build_csr,
        describe_key,
        generate_key,
        load_private_key,
        sha256_fingerprint,
        write_csr,
        write_private_key,
    )

    if force and reuse_key:
        raise click.UsageError("give --force (new key) or --reuse-key (keep it), not both")
    loaded = load_or_exit(config_path, show_warnings=False)
    config = loaded.config
    tls = config.client_tls()
    configured_key = tls.key_file if tls is not None else None
    if key_path is None:
        key_path = configured_key or config_path.absolute().parent / f"{config.gateway.id}.key"
    if csr_path is None:
        csr_path = key_path.with_suffix(".csr")
    if csr_path.absolute() == key_path.absolute():
        raise click.UsageError("--csr and --key name the same file")
    try:
        if reuse_key:
            key = load_private_key(key_path)
            state = "existing"
        else:
            key = generate_key(key_type)
            write_private_key(key_path, key, replace=force)
            state = "new"
        csr = build_csr(key, config.gateway.id, config.gateway.site)
        write_csr(csr_path, csr)
    except CertError as exc:
        _fail(str(exc))
    fingerprint = sha256_fingerprint(csr.public_bytes(Encoding.DER))
    mode = f"mode {key_path.stat().st_mode & 0o777:04o}"
    click.echo(f"private key  {key_path} ({describe_key(key)}, {state}, {mode})")
    click.echo(f"request      {csr_path}")
    click.echo(f"subject      {csr.subject.rfc4514_string()}")
    click.echo(f"sha256       {fingerprint}")
    click.echo(
        "Send the request to the utility's PKI and compare the fingerprint with theirs over "
        "another channel. Put the certificate they return at mqtt.tls.cert_file."
    )
    if configured_key is None or configured_key.absolute() != key_path.absolute():
        click.echo(
            f"note: set mqtt.tls.key_file: {key_path} (and cert_file) in {config_path}, "
            "or the agent will not use this key"
        )
    if os.geteuid() == 0 and state == "new":
        click.echo(
            f"note: the key belongs to root; the agent runs as its own user (swm-edge in the "
            f"systemd unit) and needs to read it: chown swm-edge {key_path}"
        )


@cert.command()
@config_option
@click.option(
    "--cert",
    "cert_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Certificate file (default: mqtt.tls.cert_file of the config).",
)
@click.option(
    "--key",
    "key_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Key it must belong to (default: mqtt.tls.key_file of the config).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def show(config_path: Path, cert_path: Path | None, key_path: Path | None, as_json: bool) -> None:
    """Subject, issuer, validity and days left of the client certificate, and its key.

    Warns (exit 0) when it expires within 30 days; exit 1 when it expired, is not valid yet
    or does not belong to the key.
    """
    from swm_edge.cert import CertError, inspect_certificate

    ctx = click.get_current_context()
    # With --cert alone the config is optional: the file may be looked at anywhere.
    if cert_path is None or ctx.get_parameter_source("config_path") is not ParameterSource.DEFAULT:
        loaded = load_or_exit(config_path, show_warnings=False)
        tls = loaded.config.client_tls()
        if cert_path is None:
            if tls is None or tls.cert_file is None:
                raise click.UsageError(
                    f"mqtt.tls.cert_file is not set in {config_path}; give --cert FILE"
                )
            cert_path = tls.cert_file
        if key_path is None and tls is not None:
            key_path = tls.key_file
    try:
        report = inspect_certificate(cert_path, key_path)
    except CertError as exc:
        _fail(str(exc))
    if as_json:
        click.echo(json.dumps(_report_doc(report), indent=2))
    else:
        _print_report(report)
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)
    for error in report.errors:
        click.echo(f"error: {error}", err=True)
    if report.errors:
        sys.exit(1)


def _iso(moment: Any) -> str:
    return str(moment.strftime("%Y-%m-%dT%H:%M:%SZ"))


def _report_doc(r: CertificateReport) -> dict[str, Any]:
    return {
        "path": str(r.path),
        "subject": r.subject,
        "issuer": r.issuer,
        "serial": r.serial,
        "not_before": _iso(r.not_before),
        "not_after": _iso(r.not_after),
        "days_left": r.days_left,
        "fingerprint_sha256": r.fingerprint_sha256,
        "chain_length": r.chain_length,
        "key": {
            "path": None if r.key_path is None else str(r.key_path),
            "matches": r.key_matches,
            "problem": r.key_problem,
        },
        "ok": not r.errors,
        "errors": r.errors,
        "warnings": r.warnings,
    }


def _print_report(r: CertificateReport) -> None:
    # days_left is rounded down: -3 is "expired 2 days (and some hours) ago".
    left = (
        f"{r.days_left} days left" if r.days_left >= 0 else f"expired {-r.days_left - 1} days ago"
    )
    chain = f" (+{r.chain_length - 1} CA certificates in the file)" if r.chain_length > 1 else ""
    click.echo(f"certificate  {r.path}{chain}")
    click.echo(f"subject      {r.subject}")
    click.echo(f"issuer       {r.issuer}")
    click.echo(f"serial       {r.serial}")
    click.echo(f"valid        {_iso(r.not_before)} .. {_iso(r.not_after)} ({left})")
    click.echo(f"sha256       {r.fingerprint_sha256}")
    if r.key_matches is None:
        click.echo(f"key          not checked ({r.key_problem})")
    else:
        click.echo(f"key          {r.key_path}: {'matches' if r.key_matches else 'DOES NOT MATCH'}")
