"""Human approvals for steps whose policy decision is ``require_approval``.

The waiting step holds no side effects: its decision is recorded, its body has not started
and no lease has been issued for it. An approval is a signed statement (DSSE,
``application/vnd.tenure.approval.v1+json``) recorded in the ledger *before* the step is
released; a denial or an unanswered request (after ``approval_timeout``) refuses the step
with :class:`~tenure.PolicyDenied`.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import anyio
from pydantic import BaseModel, ConfigDict

from ..._errors import PolicyDenied
from ..._util import final
from ...crypto._canonical import canonical
from ...crypto._dsse import sign_envelope
from ...evidence._format import (
    APPROVAL_DENIED,
    APPROVAL_GRANTED,
    APPROVAL_PAYLOAD_TYPE,
    APPROVAL_REQUESTED,
)
from ...lineage._names import EVENT_APPROVAL, approval_event
from ..kernel._lease import wall_us

if TYPE_CHECKING:
    from ...crypto._keys import SigningKey
    from ..kernel._control import RunControl
    from ..kernel._state import Step

__all__ = ["ApprovalBoard", "ApprovalRequest", "Approvals"]


@final
class ApprovalRequest(BaseModel):
    """A step waiting for a person's decision (read-only; created by the runtime)."""

    model_config = ConfigDict(frozen=True)

    id: str
    run_id: str
    principal: str
    action: str
    target: str
    rule_id: str
    step: str
    requested_at_us: int


@dataclass(slots=True)
class _Pending:
    request: ApprovalRequest
    run: RunControl
    step: Step
    event: anyio.Event = field(default_factory=anyio.Event)
    granted_index: int | None = None
    denied: str | None = None


class ApprovalBoard(Protocol):
    """Where requests are decided when several processes share a backend.

    With a board, a request is filed there too; a decision made anywhere (``tenure
    approvals ... --backend``, ``rt.approve`` on any host) is one compare-and-set on the
    board, and comes back here through :meth:`Approvals.resolve`.
    """

    async def file(self, request: ApprovalRequest, args_digest: str) -> None:
        """File a new request (raises ``GovernanceUnavailable`` if it cannot)."""
        ...

    def decide(self, request_id: str, decision: str, approver: str, reason: str) -> None:
        """Try to decide a request (in the background; the winner comes back resolved)."""
        ...

    async def time_out(self, request_id: str) -> tuple[str, str, str] | None:
        """The waiter's timeout races the deciders: ``None`` if it won, else the
        ``(decision, approver, reason)`` that did."""
        ...


class Approvals:
    """The runtime's table of pending approval requests."""

    def __init__(self, key: SigningKey, timeout: float) -> None:
        self._key = key
        self._timeout = timeout
        self._pending: dict[str, _Pending] = {}
        #: set when the runtime shares a backend (see :class:`ApprovalBoard`)
        self.board: ApprovalBoard | None = None

    def pending(self) -> list[ApprovalRequest]:
        """Requests still waiting, oldest first."""
        return [p.request for p in self._pending.values()]

    async def wait(self, run: RunControl, step: Step, rule: str) -> int:
        """Block ``step`` until approved (returns the grant's ledger index) or refuse it."""
        request = ApprovalRequest(
            id="apr_" + secrets.token_hex(8),
            run_id=run.id,
            principal=run.principal,
            action=step.action,
            target=step.target.name,
            rule_id=rule,
            step=step.id,
            requested_at_us=wall_us(),
        )
        pending = _Pending(request, run, step)
        parent_span = step.parent.span if step.parent is not None else run.span
        run.record(
            APPROVAL_REQUESTED,
            {
                "request": request.id,
                "step": step.id,
                "rule": rule,
                "action": step.action,
                "target": step.target.name,
                "principal": run.principal,
            },
            parent_span,
        )
        parent_span.event(EVENT_APPROVAL, approval_event(request.id, "requested"))
        self._pending[request.id] = pending
        board = self.board
        try:
            if board is not None:
                await board.file(request, step.args_digest)
            with anyio.move_on_after(self._timeout):
                await pending.event.wait()
            if not pending.event.is_set() and board is not None:
                winner = await board.time_out(request.id)
                if winner is not None:  # a decision won the race against the timeout
                    self._answer(pending, *winner)
        finally:
            self._pending.pop(request.id, None)
        if pending.granted_index is not None:
            return pending.granted_index
        reason = pending.denied
        if reason is None:
            reason = f"no approver answered within {self._timeout:g}s"
            self._record_answer(pending, APPROVAL_DENIED, "timeout", reason)
            check = "approval.timeout"
        else:
            check = "approval.denied"
        raise PolicyDenied(
            f"{step.target.qualified} was not approved: {reason}",
            run_id=run.id,
            lease_id=step.lease.id,
            check=check,
            task=step.target.qualified,
            source="approval",
        )

    def approve(self, request_id: str, approver: str) -> None:
        """Grant a pending request: signed, recorded, then the step is released.

        With a board the grant is first won on the board (exactly one decision across
        every process); the step is released when it comes back (:meth:`resolve`).
        """
        pending = self._take(request_id)
        if self.board is not None:
            self.board.decide(request_id, "granted", approver, "")
            return
        self._answer(pending, "granted", approver, "")

    def deny(self, request_id: str, approver: str, reason: str) -> None:
        """Refuse a pending request; the step raises :class:`PolicyDenied`."""
        pending = self._take(request_id)
        if self.board is not None:
            self.board.decide(request_id, "denied", approver, reason)
            return
        self._answer(pending, "denied", approver, reason)

    def resolve(self, request_id: str, decision: str, approver: str, reason: str) -> None:
        """Apply the decision the board recorded (from this process or any other)."""
        pending = self._pending.get(request_id)
        if pending is not None and not pending.event.is_set():
            self._answer(pending, decision, approver, reason)

    def _answer(self, pending: _Pending, decision: str, approver: str, reason: str) -> None:
        if decision == "granted":
            pending.granted_index = self._record_answer(pending, APPROVAL_GRANTED, approver, "")
        elif decision == "denied":
            self._record_answer(pending, APPROVAL_DENIED, approver, reason)
            pending.denied = f"denied by {approver}: {reason}"
        # "timeout": another waiter's timeout won; the wait ends as a timeout here too
        pending.event.set()

    def _take(self, request_id: str) -> _Pending:
        pending = self._pending.get(request_id)
        if pending is None or pending.event.is_set():
            raise KeyError(f"no pending approval request {request_id!r}")
        return pending

    def _record_answer(self, pending: _Pending, kind: str, approver: str, reason: str) -> int:
        req = pending.request
        statement = {
            "request": req.id,
            "run": req.run_id,
            "step": req.step,
            "target": req.target,
            "decision": "granted" if kind == APPROVAL_GRANTED else "denied",
            "approver": approver,
            "reason": reason,
            "at": wall_us(),
        }
        envelope = sign_envelope(self._key, APPROVAL_PAYLOAD_TYPE, canonical(statement))
        step = pending.step
        span = step.parent.span if step.parent is not None else pending.run.span
        span.event(EVENT_APPROVAL, approval_event(req.id, str(statement["decision"]), approver))
        return pending.run.record(
            kind,
            {
                "request": req.id,
                "step": req.step,
                "approver": approver,
                "reason": reason,
                "envelope": envelope,
            },
            span,
        )
