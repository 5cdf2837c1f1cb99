"""``tenure approvals list|approve|deny --backend URL``: answer approval requests from anywhere.

Requests waiting in any runtime or worker sharing the backend are listed oldest first; an
answer is one compare-and-set on the shared board, so two approvers (or an approver and
the waiter's timeout) racing on one request produce exactly one decision, and the loser is
told who won. The waiting process records the decision and releases or refuses the step.
Exit codes: 0 decided (or listed), 1 already decided, unknown, or the backend could not be
reached, 2 a usage error.
"""

from __future__ import annotations

import getpass
from collections.abc import Callable
from typing import Annotated, TypeVar

import anyio
import typer

from .._errors import GovernanceViolation
from ..runtime.backends import ApprovalRecord, open_backend
from ._db import BACKEND_OPTION

__all__ = ["register"]

T = TypeVar("T")

EXIT_FAILED = 1
EXIT_USAGE = 2

approvals_app = typer.Typer(
    help="List and answer steps waiting for approval (across every host of a backend).",
    no_args_is_help=True,
)


def _who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _fail(message: str, code: int = EXIT_FAILED) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _pending(url: str) -> list[ApprovalRecord]:
    async def read() -> list[ApprovalRecord]:
        backend = await open_backend(url)
        try:
            return await backend.approvals.pending()
        finally:
            await backend.close()

    return anyio.run(read)


def _decide(url: str, request_id: str, decision: str, approver: str, reason: str) -> str:
    async def cas() -> str:
        backend = await open_backend(url)
        try:
            won = await backend.approvals.decide(
                request_id,
                decision,  # type: ignore[arg-type]
                approver=approver,
                reason=reason,
            )
            if won is not None:
                return ""
            record = await backend.approvals.get(request_id)
            if record is None:
                return f"no approval request {request_id!r}"
            return f"{request_id} was already decided: {record.decision} by {record.approver}"
        finally:
            await backend.close()

    return anyio.run(cas)


def _run(fn: Callable[..., T], *args: str) -> T:
    try:
        return fn(*args)
    except ValueError as exc:
        raise _fail(str(exc), EXIT_USAGE) from None
    except (GovernanceViolation, RuntimeError) as exc:
        raise _fail(str(getattr(exc, "reason", exc))) from None


@approvals_app.command("list")
def list_command(backend: Annotated[str, BACKEND_OPTION]) -> None:
    """Every request still waiting, oldest first."""
    records = _run(_pending, backend)
    if not records:
        typer.echo("no approval requests are waiting")
        return
    for r in records:
        typer.echo(
            f"{r.id}  run {r.run_id}  {r.principal}  {r.action} {r.target}  "
            f"rule {r.rule_id}  step {r.step}  args {r.args_digest[:19]}"
        )


def _answer(backend: str, request_id: str, decision: str, approver: str, reason: str) -> None:
    lost = _run(_decide, backend, request_id, decision, approver, reason)
    if lost:
        raise _fail(lost)
    typer.echo(f"{request_id}: {decision} by {approver}")


@approvals_app.command("approve")
def approve_command(
    request_id: Annotated[str, typer.Argument(metavar="REQUEST_ID")],
    backend: Annotated[str, BACKEND_OPTION],
    approver: Annotated[
        str | None, typer.Option("--approver", help="who approves (default: current user)")
    ] = None,
) -> None:
    """Grant a waiting request (the step runs on exactly the arguments it was filed with)."""
    _answer(backend, request_id, "granted", approver or _who(), "")


@approvals_app.command("deny")
def deny_command(
    request_id: Annotated[str, typer.Argument(metavar="REQUEST_ID")],
    backend: Annotated[str, BACKEND_OPTION],
    reason: Annotated[str, typer.Option("--reason", "-r", help="why (recorded)")] = "denied",
    approver: Annotated[
        str | None, typer.Option("--approver", help="who denies (default: current user)")
    ] = None,
) -> None:
    """Refuse a waiting request: the step raises PolicyDenied."""
    _answer(backend, request_id, "denied", approver or _who(), reason)


def register(app: typer.Typer) -> None:
    """Add ``approvals`` to the ``tenure`` app."""
    app.add_typer(approvals_app, name="approvals")
