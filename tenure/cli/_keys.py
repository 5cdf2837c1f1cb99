"""``tenure keys generate|show|certify``: the runtime's Ed25519 signing key, and certificates.

Invariants: an existing private key is never overwritten without ``--force`` (exit code 1,
one line naming the file); the private key is written with mode 0600 by
:func:`tenure.crypto._keys.generate_key_files`; on success the key id and both paths are
printed. ``show`` reads only the public half and never creates a key: a missing or
malformed key is one line, exit code 1.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from .._errors import GovernanceViolation
from ..crypto import (
    PRIVATE_KEY_NAME,
    PUBLIC_KEY_NAME,
    default_key_dir,
    generate_key_files,
    key_id_of,
    key_text,
    load_public_key,
    load_signing_key,
    public_key_pem,
)
from ..evidence._certs import CERT_NAME, certify

__all__ = ["register"]

keys_app = typer.Typer(
    name="keys",
    help="Manage the Ed25519 key that signs leases, checkpoints and attestations.",
    no_args_is_help=True,
)


@keys_app.command("generate")
def generate(
    directory: Annotated[
        Path | None,
        typer.Option(
            "--dir",
            help="Directory for tenure.key / tenure.pub (default: $TENURE_KEY_DIR or the "
            "per-user data directory).",
            file_okay=False,
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing key pair.")] = False,
) -> None:
    """Create a new signing key pair and print its key id and file paths."""
    target = directory if directory is not None else default_key_dir()
    private_path = target / PRIVATE_KEY_NAME
    if private_path.exists() and not force:
        typer.echo(
            f"error: {private_path} already exists; refusing to overwrite it (use --force)",
            err=True,
        )
        raise typer.Exit(code=1)
    try:
        key = generate_key_files(target, overwrite=force)
    except OSError as exc:
        typer.echo(f"error: cannot write the key pair to {target}: {exc.strerror or exc}", err=True)
        raise typer.Exit(code=1) from exc
    typer.echo(f"key id:      {key.key_id}")
    typer.echo(f"private key: {private_path}")
    typer.echo(f"public key:  {target / PUBLIC_KEY_NAME}")


@keys_app.command("show")
def show(
    directory: Annotated[
        Path | None,
        typer.Option(
            "--dir",
            help="Directory holding tenure.pub (default: $TENURE_KEY_DIR or the per-user data "
            "directory).",
            file_okay=False,
        ),
    ] = None,
) -> None:
    """Print the key id, the key files' paths and the public key (PEM)."""
    target = directory if directory is not None else default_key_dir()
    public_path = target / PUBLIC_KEY_NAME
    if not public_path.exists():
        typer.echo(
            f"error: no key in {target} ({PUBLIC_KEY_NAME} is missing); create one with "
            "`tenure keys generate`",
            err=True,
        )
        raise typer.Exit(code=1)
    try:
        key = load_public_key(public_path)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from None
    private_path = target / PRIVATE_KEY_NAME
    typer.echo(f"key id:      {key_id_of(key)}")
    typer.echo(f"private key: {private_path}" + ("" if private_path.exists() else " (absent)"))
    typer.echo(f"public key:  {public_path}")
    typer.echo(f"as approver: {key_text(key)}  (the form a policy's [approvers] table takes)")
    typer.echo(public_key_pem(key).decode("ascii"), nl=False)


@keys_app.command("certify")
def certify_command(
    public_key: Annotated[
        Path, typer.Argument(metavar="WORKER.pub", help="the public key to certify (PEM)")
    ],
    name: Annotated[str, typer.Option("--name", help="the process the key belongs to")],
    by: Annotated[Path, typer.Option("--by", help="the operator's private key (PEM)")],
    out: Annotated[
        Path | None,
        typer.Option("--out", help="the certificate file (default: tenure.cert beside WORKER.pub)"),
    ] = None,
) -> None:
    """Certify a runtime's or worker's key with the operator's, for one-key audits."""
    target = out if out is not None else public_key.with_name(CERT_NAME)
    try:
        subject = load_public_key(public_key)
        operator = load_signing_key(by, create=False)
        certificate = certify(operator, subject, name)
    except (ValueError, GovernanceViolation) as exc:
        typer.echo(f"error: {getattr(exc, 'reason', exc)}", err=True)
        raise typer.Exit(code=2) from None
    try:
        target.write_text(json.dumps(certificate, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        typer.echo(f"error: cannot write {target}: {exc.strerror or exc}", err=True)
        raise typer.Exit(code=1) from exc
    typer.echo(f"certified {key_id_of(subject)} as {name!r} by {operator.key_id}: {target}")


def register(app: typer.Typer) -> None:
    """Add the ``keys`` command group to the root ``tenure`` app."""
    app.add_typer(keys_app, name="keys")
