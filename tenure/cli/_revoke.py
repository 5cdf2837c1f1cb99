"""``tenure revoke ID --reason R``: the kill switch, from any process on the host or beyond.

Without ``--backend`` it drops a revocation request (``_revocations``) into
``<evidence_dir>/.revocations``; every runtime writing its evidence under that folder
applies it on its next watchdog pass. With ``--backend URL`` (or ``TENURE_BACKEND``) it
appends the revocation to the shared governance log: every runtime and worker on every
host applies it within milliseconds (LISTEN) or, with notifications lost, at its next
renewal. Either way the run's ledger records who asked and why.

Through the folder the command looks first, in the evidence, for the id: a run directory
or a lease issued in one. An id found nowhere is refused without writing anything. What a
ledger says is never a reason to withhold the kill switch: its records are not verified
here, and the governed code can append to its own ledger (a forged ``run.end``, a garbled
line). So a run whose ledger says it ended, or an id that may be in a ledger that cannot be
read, still gets its request, with a warning naming what the ledger said. Then it waits up
to ``--wait`` seconds for a runtime to apply the request (it deletes an applied request)
and says whether one did.

Exit codes: 0 the revocation was applied (or, with ``--backend``, logged); 1 the id was
found nowhere, no runtime applied it in time, or the backend refused or could not be reached;
2 a usage error (an id that cannot be a run or lease id, an evidence folder that does not
exist or cannot be written). Nothing is created when the command refuses.
"""

from __future__ import annotations

import getpass
import time
from pathlib import Path
from typing import Annotated

import anyio
import typer

from .._errors import GovernanceViolation
from ..evidence._batch import leases_of
from ..evidence._format import LEDGER_NAME, RUN_END, valid_run_id
from ..evidence._reader import LedgerReader, LedgerReadError
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
    wait: Annotated[
        float,
        typer.Option("--wait", min=0, help="seconds to wait for a runtime to apply it"),
    ] = 5.0,
) -> None:
    """Revoke a live run or lease held by a runtime in another process (or on another host)."""
    if not reason.strip():
        typer.echo("error: --reason is required (it is recorded with the revocation)", err=True)
        raise typer.Exit(EXIT_USAGE)
    if backend is not None:
        _revoke_everywhere(backend, target, reason, by or _requester())
        return
    if not valid_run_id(target):
        typer.echo(
            f"error: {target!r} is not a run or lease id ([A-Za-z0-9._-], 1-128 chars)", err=True
        )
        raise typer.Exit(EXIT_USAGE)
    if not evidence_dir.is_dir():
        typer.echo(
            f"error: {evidence_dir}: no such evidence directory (no runtime writes "
            "there; pass --evidence-dir)",
            err=True,
        )
        raise typer.Exit(EXIT_USAGE)
    send, note = _lookup(evidence_dir, target)
    if not send:
        typer.echo(f"error: {note}; nothing to revoke", err=True)
        raise typer.Exit(EXIT_FAILED)
    if note is not None:
        typer.echo(f"warning: {note}", err=True)
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
    deadline = time.monotonic() + wait
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    if path.exists():
        why = (
            f"{note}" if note is not None else f"is one running with --evidence-dir {evidence_dir}?"
        )
        typer.echo(
            f"error: no runtime applied it within {wait:g}s ({why}); the request stays in {folder}",
            err=True,
        )
        raise typer.Exit(EXIT_FAILED)
    typer.echo(f"applied: the runtime holding {target} revoked it")


def _scan(ledger: Path, lease: str) -> tuple[str | None, bool]:
    """``run.end``'s status (``None``: still live) and whether ``lease`` was issued in it."""
    issued = False
    try:
        for _, _, rec in LedgerReader(ledger):
            if rec["kind"] == RUN_END:
                return str(rec.get("status", "?")), issued
            issued = issued or any(c.get("lid") == lease for c in leases_of(rec))
    except (LedgerReadError, OSError):
        return "unreadable", issued
    return None, issued


def _lookup(evidence_dir: Path, target: str) -> tuple[bool, str | None]:
    """Whether to send a request for ``target``, and what to tell the operator."""
    run = evidence_dir / target / LEDGER_NAME
    if run.is_file():
        status, _ = _scan(run, target)
        return True, None if status is None else _unverified(f"run {target}", status)
    unreadable = []
    for ledger in sorted(evidence_dir.glob(f"*/{LEDGER_NAME}")):
        status, issued = _scan(ledger, target)
        if issued:
            return True, None if status is None else _unverified(f"lease {target}'s run", status)
        if status == "unreadable":
            unreadable.append(ledger.parent.name)
    if unreadable:
        return True, (
            f"the ledger(s) of {', '.join(unreadable)} could not be read; the request is sent "
            f"in case {target} is one of their leases"
        )
    return False, f"no live run or lease {target!r} in {evidence_dir}"


def _unverified(what: str, status: str) -> str:
    return (
        f"{what} already ended ({status}) by its ledger's unverified word; the request is "
        "sent anyway in case it is still live"
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
