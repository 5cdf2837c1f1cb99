"""``tenure revoke ID --reason R``: the kill switch, from any process on the host.

Drops a revocation request (``_revocations``) into ``<evidence_dir>/.revocations``; every
runtime writing its evidence under that folder applies it on its next watchdog pass, and
the run's ledger records who asked and why. Exit codes: 0 the request was written, 2 a
usage error (an id that cannot be a run or lease id, a folder that cannot be written).
"""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Annotated

import typer

from ..runtime.services._revocations import REVOCATIONS_DIR, write_request

__all__ = ["register"]

EXIT_USAGE = 2


def _requester() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry, no USER variable (containers)
        return "unknown"


def revoke_command(
    target: Annotated[str, typer.Argument(metavar="RUN_OR_LEASE_ID", help="what to revoke")],
    reason: Annotated[
        str, typer.Option("--reason", "-r", help="why (recorded in the run's evidence)")
    ] = "",
    by: Annotated[
        str | None, typer.Option("--by", help="who asks (default: the current user)")
    ] = None,
    evidence_dir: Annotated[
        Path, typer.Option("--evidence-dir", help="the evidence folder the runtime writes to")
    ] = Path("runs"),
) -> None:
    """Revoke a live run or lease held by a runtime in another process."""
    if not reason.strip():
        typer.echo("error: --reason is required (it is recorded with the revocation)", err=True)
        raise typer.Exit(EXIT_USAGE)
    folder = evidence_dir / REVOCATIONS_DIR
    try:
        path = write_request(folder, target, reason, by or _requester())
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_USAGE) from None
    except OSError as exc:
        typer.echo(f"error: cannot write to {folder}: {exc.strerror or exc}", err=True)
        raise typer.Exit(EXIT_USAGE) from None
    typer.echo(f"revocation requested: {path}")
    typer.echo(
        "a runtime writing evidence to "
        f"{evidence_dir} applies it on its next watchdog pass (0.25 s by default)"
    )


def register(app: typer.Typer) -> None:
    """Add ``revoke`` to the ``tenure`` app."""
    app.command("revoke")(revoke_command)
