"""``tenure revoke ID --reason R``: the kill switch, from any process on the host or beyond.

Without ``--backend`` it drops a revocation request (``_revocations``) into
``<evidence_dir>/.revocations``; every runtime writing its evidence under that folder
applies it on its next watchdog pass. With ``--backend URL`` (or ``TENURE_BACKEND``) it
appends the revocation to the shared governance log: every runtime and worker on every
host applies it within milliseconds (LISTEN) or, with notifications lost, at its next
renewal. Either way the run's ledger records who asked and why. Exit codes: 0 the request
was written, 1 the backend refused or could not be reached, 2 a usage error (an id that
cannot be a run or lease id, a folder that cannot be written).
"""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Annotated

import anyio
import typer

from .._errors import GovernanceViolation
from ..evidence._format import valid_run_id
from ..runtime.backends import open_backend, redact
from ..runtime.services._revocations import REVOCATIONS_DIR, write_request
from ._db import BACKEND_OPTION

__all__ = ["register"]

EXIT_FAILED = 1
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
    backend: Annotated[str | None, BACKEND_OPTION] = None,
) -> None:
    """Revoke a live run or lease held by a runtime in another process (or on another host)."""
    if not reason.strip():
        typer.echo("error: --reason is required (it is recorded with the revocation)", err=True)
        raise typer.Exit(EXIT_USAGE)
    if backend is not None:
        _revoke_everywhere(backend, target, reason, by or _requester())
        return
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


def _revoke_everywhere(url: str, target: str, reason: str, by: str) -> None:
    if not valid_run_id(target):
        typer.echo(f"error: {target!r} is not a run or lease id", err=True)
        raise typer.Exit(EXIT_USAGE)

    async def append() -> int:
        backend = await open_backend(url)
        try:
            return await backend.log.append(
                "revoke", {"target": target, "reason": reason[:500], "by": by[:500]}
            )
        finally:
            await backend.close()

    try:
        revision = anyio.run(append)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_USAGE) from None
    except (GovernanceViolation, RuntimeError) as exc:
        typer.echo(f"error: {getattr(exc, 'reason', exc)}", err=True)
        raise typer.Exit(EXIT_FAILED) from None
    typer.echo(f"revoked {target}: governance log revision {revision} on {redact(url)}")


def register(app: typer.Typer) -> None:
    """Add ``revoke`` to the ``tenure`` app."""
    app.command("revoke")(revoke_command)
