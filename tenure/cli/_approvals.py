"""``tenure approvals list|approve|deny``: answer approval requests from another process.

An answer is signed with the approver's own key (``--key``, a private key file as ``tenure
keys generate`` writes it) over the request id and its action digest; the waiting runtime
releases the step only if that key is one its policy declares for the rule.

Two ways to reach the waiting runtime:

* ``--evidence-dir DIR`` (the default ``runs``; one host): requests are shown in
  ``DIR/.approvals``, the signed answer is dropped there and picked up within a watchdog
  interval (see ``_approval_folder``);
* ``--backend URL``: requests waiting in any runtime or worker sharing the backend; an
  answer is one compare-and-set on the shared board, so two approvers (or an approver and
  the waiter's timeout) racing on one request produce exactly one decision, and the loser
  is told who won.

Exit codes: 0 decided (or listed), 1 already decided, unknown, or the backend could not be
reached, 2 a usage error (no such key file, an id that cannot be a request id).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import anyio
import typer

from .._errors import GovernanceViolation
from .._text import one_line
from ..crypto import SigningKey, load_signing_key, sign_grant
from ..runtime.backends import ApprovalRecord, open_backend
from ..runtime.services._approval_folder import APPROVALS_DIR, read_requests, write_grant
from ..runtime.services._approval_request import check_request
from ._db import BACKEND_OPTION

__all__ = ["register"]

T = TypeVar("T")

EXIT_FAILED = 1
EXIT_USAGE = 2

approvals_app = typer.Typer(
    help="List and answer steps waiting for approval (across every host of a backend).",
    no_args_is_help=True,
)


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
            record = await backend.approvals.get(request_id)
            if record is None:
                return f"no approval request {request_id!r}"
            try:
                check_request(_shown(record))
            except ValueError as exc:
                return f"{request_id} not signed: {exc}"
            action = str(record.details["action_digest"])
            key = _key(approver)
            envelope = sign_grant(
                key,
                request=request_id,
                action=action,
                decision=decision,  # type: ignore[arg-type]
                reason=reason,
            )
            won = await backend.approvals.decide(
                request_id,
                decision,  # type: ignore[arg-type]
                approver=key.key_id,
                reason=reason,
                envelope=envelope,
            )
            if won is not None:
                return ""
            record = await backend.approvals.get(request_id)
            assert record is not None
            return f"{request_id} was already decided: {record.decision} by {record.approver}"
        finally:
            await backend.close()

    return anyio.run(cas)


def _shown(record: ApprovalRecord) -> dict[str, Any]:
    """A board record as the request it shows (the fields ``check_request`` recomputes)."""
    return {
        **record.details,
        "id": record.id,
        "run_id": record.run_id,
        "principal": record.principal,
        "action": record.action,
        "target": record.target,
        "rule_id": record.rule_id,
        "step": record.step,
        "args_digest": record.args_digest,
    }


def _key(path: str) -> SigningKey:
    try:
        return load_signing_key(Path(path), create=False)
    except GovernanceViolation as exc:
        raise ValueError(f"--key {path}: {exc.reason}") from None


def _drop(evidence_dir: Path, request_id: str, decision: str, key_path: str, reason: str) -> str:
    folder = evidence_dir / APPROVALS_DIR
    request = next((r for r in read_requests(folder) if r.get("id") == request_id), None)
    if request is None:
        return f"no approval request {request_id!r} is waiting under {evidence_dir}"
    try:
        check_request(request)
    except ValueError as exc:
        return f"{request_id} not signed: {exc}"
    key = _key(key_path)
    if key.public_text not in request.get("approver_keys", []):
        accepted = ", ".join(request.get("approvers", [])) or "no one"
        return (
            f"key {key.key_id} is not one the policy accepts for {request_id} (rule "
            f"{request.get('rule_id')!r} accepts {accepted})"
        )
    envelope = sign_grant(
        key,
        request=request_id,
        action=str(request.get("action_digest", "")),
        decision=decision,  # type: ignore[arg-type]
        reason=reason,
    )
    write_grant(folder, request_id, envelope)
    return ""


def _run(fn: Callable[..., T], *args: str) -> T:
    try:
        return fn(*args)
    except ValueError as exc:
        raise _fail(str(exc), EXIT_USAGE) from None
    except (GovernanceViolation, RuntimeError) as exc:
        raise _fail(str(getattr(exc, "reason", exc))) from None


_EVIDENCE_OPTION = typer.Option(
    "--evidence-dir", help="the evidence folder the waiting runtime writes to (one host)"
)
_KEY_OPTION = typer.Option(
    "--key", help="the approver's private key file (its public key is declared in the policy)"
)


@approvals_app.command("list")
def list_command(
    backend: Annotated[str | None, BACKEND_OPTION] = None,
    evidence_dir: Annotated[Path, _EVIDENCE_OPTION] = Path("runs"),
) -> None:
    """Every request still waiting, oldest first, with the arguments it would run on."""
    if backend:
        records = _run(_pending, backend)
        if not records:
            typer.echo("no approval requests are waiting")
        for r in records:
            _echo(
                f"{r.id}  run {r.run_id}  {r.principal}  {r.action} {r.target}  "
                f"rule {r.rule_id}  step {r.step}"
            )
            _show_args(_shown(r))
        return
    waiting = read_requests(evidence_dir / APPROVALS_DIR)
    if not waiting:
        typer.echo(f"no approval requests are waiting under {evidence_dir}")
    for w in waiting:
        approvers = w.get("approvers")
        names = [str(a) for a in approvers] if isinstance(approvers, list) else []
        _echo(
            f"{w.get('id')}  run {w.get('run_id')}  {w.get('principal')}  {w.get('action')} "
            f"{w.get('target')}  rule {w.get('rule_id')}  approvers "
            f"{', '.join(names) or '(none declared)'}"
        )
        _show_args(w)


def _echo(line: str) -> None:
    # Whoever wrote the file or the row chose these words: no escape sequence reaches the
    # approver's terminal (one could overwrite the NOT SIGNABLE line above it).
    typer.echo(one_line(line, limit=2000))


def _show_args(request: dict[str, Any]) -> None:
    try:
        shown = check_request(request)
    except ValueError as exc:
        _echo(f"    NOT SIGNABLE: {exc}")
        return
    _echo(f"    args {str(request.get('args_digest', ''))[:19]} (checked): {shown}")


def _answer(
    backend: str | None,
    evidence_dir: Path,
    request_id: str,
    decision: str,
    key: str,
    reason: str,
) -> None:
    if backend:
        lost = _run(_decide, backend, request_id, decision, key, reason)
    else:
        lost = _run(_drop, evidence_dir, request_id, decision, key, reason)  # type: ignore[arg-type]
    if lost:
        raise _fail(lost)
    where = f"backend {backend}" if backend else f"{evidence_dir}/{APPROVALS_DIR}"
    typer.echo(f"{request_id}: {decision}, signed with {key} ({where})")


@approvals_app.command("approve")
def approve_command(
    request_id: Annotated[str, typer.Argument(metavar="REQUEST_ID")],
    key: Annotated[str, _KEY_OPTION],
    backend: Annotated[str | None, BACKEND_OPTION] = None,
    evidence_dir: Annotated[Path, _EVIDENCE_OPTION] = Path("runs"),
) -> None:
    """Grant a waiting request: the step runs on exactly the arguments it was filed with."""
    _answer(backend, evidence_dir, request_id, "granted", key, "")


@approvals_app.command("deny")
def deny_command(
    request_id: Annotated[str, typer.Argument(metavar="REQUEST_ID")],
    key: Annotated[str, _KEY_OPTION],
    reason: Annotated[str, typer.Option("--reason", "-r", help="why (recorded)")] = "denied",
    backend: Annotated[str | None, BACKEND_OPTION] = None,
    evidence_dir: Annotated[Path, _EVIDENCE_OPTION] = Path("runs"),
) -> None:
    """Refuse a waiting request: the step raises PolicyDenied."""
    _answer(backend, evidence_dir, request_id, "denied", key, reason)


def register(app: typer.Typer) -> None:
    """Add ``approvals`` to the ``tenure`` app."""
    app.add_typer(approvals_app, name="approvals")
