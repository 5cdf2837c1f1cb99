"""Human approvals for steps whose policy decision is ``require_approval``, decided by keys.

The waiting step holds no side effects: its decision is recorded, its body has not started
and no lease has been issued for it. The request shows the approver what exactly would run
— the action, the target, the canonical arguments (rendered for a person, and their digest)
and the rule — and names it by an *action digest* (:func:`~tenure.crypto._grants.action_digest`).

Invariants:

* A step is released only by a grant signed by an approver key the policy declares for its
  rule (``[approvers]``, narrowed by the rule's ``approvers``), over this request's id and
  action digest. A name proves nothing: there is no unsigned way to approve.
* The runtime's own key never approves, even if a policy lists it.
* A grant that fails any check is refused with :class:`~tenure.SignatureInvalid` and
  changes nothing: the request stays pending, nothing is recorded.
* The step runs on exactly the approved arguments: the snapshot the action digest covers.
* A denial (signed the same way) or an unanswered request (after ``approval_timeout``)
  refuses the step with :class:`~tenure.PolicyDenied`.
* Every answer is recorded — approver name, key id, reason and the approver's envelope —
  before the step is released or refused.
"""

from __future__ import annotations

import logging
import math
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ..._errors import PolicyDenied, SignatureInvalid
from ...crypto import (
    Grant,
    action_digest,
    b64d,
    canonical,
    key_id_of,
    open_grant,
    parse_key_text,
    sign_envelope,
)
from ...evidence._format import (
    APPROVAL_DENIED,
    APPROVAL_GRANTED,
    APPROVAL_PAYLOAD_TYPE,
    APPROVAL_REQUESTED,
)
from ...lineage._names import EVENT_APPROVAL, approval_event
from ..kernel._lease import wall_us
from ._approval_folder import ApprovalFolder
from ._approval_request import ApprovalRequest, render_args, shown_encoding

if TYPE_CHECKING:
    from ...crypto import SigningKey
    from ..kernel._control import RunControl
    from ..kernel._state import GovState, Step

__all__ = ["ApprovalBoard", "Approvals"]

_log = logging.getLogger("tenure.approvals")


def _claimed_request(envelope: object) -> str | None:
    """The request id a grant says it answers (read before it is verified, to pick keys)."""
    if not isinstance(envelope, Mapping) or not isinstance(envelope.get("payload"), str):
        return None
    try:
        body = orjson.loads(b64d(envelope["payload"]))
    except (ValueError, orjson.JSONDecodeError):
        return None
    request = body.get("request") if isinstance(body, dict) else None
    return request if isinstance(request, str) else None


@dataclass(slots=True)
class _Pending:
    request: ApprovalRequest
    run: RunControl
    step: Step
    keys: dict[str, tuple[str, Ed25519PublicKey]]  # key id -> (approver name, public key)
    event: anyio.Event = field(default_factory=anyio.Event)
    granted_index: int | None = None
    denied: str | None = None


class ApprovalBoard(Protocol):
    """Where requests are filed and decided when they must be answerable elsewhere.

    A request is filed there too; a decision made anywhere (``tenure approvals ...``,
    ``rt.approve`` on any host) carries the approver's signed envelope and comes back here
    through :meth:`Approvals.resolve`, which verifies it before it releases the step.
    """

    async def file(self, request: ApprovalRequest, args_digest: str) -> None:
        """File a new request (raises ``GovernanceUnavailable`` if it cannot)."""
        ...

    def decide(
        self,
        request_id: str,
        decision: str,
        approver: str,
        reason: str,
        envelope: Mapping[str, Any] | None = None,
    ) -> None:
        """Try to decide a request (in the background; the winner comes back resolved)."""
        ...

    async def time_out(self, request_id: str) -> tuple[str, str, str] | None:
        """The waiter's timeout races the deciders: ``None`` if it won, else the
        ``(decision, approver, reason)`` that did."""
        ...

    def withdraw(self, request_id: str) -> None:
        """The request is answered or gone: stop showing it (best effort)."""
        ...


class Approvals:
    """The runtime's table of pending approval requests."""

    def __init__(self, key: SigningKey, timeout: float, gov: GovState) -> None:
        self._key = key
        self._timeout = timeout
        self._gov = gov
        self._pending: dict[str, _Pending] = {}
        #: set when requests must be answerable from elsewhere (see :class:`ApprovalBoard`)
        self.board: ApprovalBoard | None = None
        #: set when requests are shown in (and answered through) ``.approvals``
        self.folder: ApprovalFolder | None = None
        #: how often a waiting request looks for a grant dropped in the folder
        self.poll_interval = 0.25

    def pending(self) -> list[ApprovalRequest]:
        """Requests still waiting, oldest first."""
        return [p.request for p in self._pending.values()]

    def request(self, request_id: str) -> ApprovalRequest:
        """The pending request ``request_id`` (``KeyError`` if none is waiting)."""
        return self._take(request_id).request

    def _approver_keys(self, rule: str) -> dict[str, tuple[str, Ed25519PublicKey]]:
        out: dict[str, tuple[str, Ed25519PublicKey]] = {}
        for name, text in self._gov.policy.approvers_for(rule).items():
            public = parse_key_text(text)
            key_id = key_id_of(public)
            if key_id != self._key.key_id:  # the runtime's own key never approves
                out[key_id] = (name, public)
        return out

    async def wait(self, run: RunControl, step: Step, rule: str) -> int:
        """Block ``step`` until approved (returns the grant's ledger index) or refuse it."""
        request_id = "apr_" + secrets.token_hex(8)
        keys = self._approver_keys(rule)
        digest_of_action = action_digest(
            request=request_id,
            run=run.id,
            step=step.id,
            principal=run.principal,
            action=step.action,
            target=step.target.name,
            args=step.args_digest,
            rule=rule,
            policy=self._gov.policy.digest,
        )
        request = ApprovalRequest(
            id=request_id,
            run_id=run.id,
            principal=run.principal,
            action=step.action,
            target=step.target.name,
            rule_id=rule,
            step=step.id,
            requested_at_us=wall_us(),
            args=render_args(step.bound_args()),
            args_digest=step.args_digest,
            action_digest=digest_of_action,
            args_encoding=shown_encoding(step),
            policy_digest=self._gov.policy.digest,
            approvers=tuple(name for name, _ in keys.values()),
            approver_keys=tuple(self._gov.policy.approvers_for(rule)[n] for n, _ in keys.values()),
        )
        pending = _Pending(request, run, step, keys)
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
                "args": step.args_digest,
                "action_digest": digest_of_action,
                "approvers": list(request.approvers),
                "approver_keys": list(request.approver_keys),
            },
            parent_span,
        )
        parent_span.event(EVENT_APPROVAL, approval_event(request.id, "requested"))
        self._pending[request.id] = pending
        board = self.board
        try:
            if board is not None:
                await board.file(request, step.args_digest)
            if self.folder is not None:
                self.folder.publish(request.model_dump())
            with anyio.move_on_after(self._timeout):
                await self._wait_answer(pending)
            if not pending.event.is_set() and board is not None:
                winner = await board.time_out(request.id)
                if winner is not None:  # a decision won the race against the timeout
                    self.resolve(request.id, *winner)
        finally:
            self._pending.pop(request.id, None)
            if board is not None:
                board.withdraw(request.id)
            if self.folder is not None:
                self.folder.withdraw(request.id)
        if pending.granted_index is not None:
            return pending.granted_index
        reason = pending.denied
        if reason is None:
            reason = f"no approver answered within {self._timeout:g}s"
            self._record_timeout(pending, reason)
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

    async def _wait_answer(self, pending: _Pending) -> None:
        folder = self.folder
        while not pending.event.is_set():
            with anyio.move_on_after(self.poll_interval if folder is not None else math.inf):
                await pending.event.wait()
            if folder is not None and not pending.event.is_set():
                dropped = folder.grant_for(pending.request.id)
                if dropped is not None:
                    try:
                        self.submit(dropped)  # type: ignore[arg-type]
                    except (SignatureInvalid, KeyError) as exc:
                        _log.warning("refused a grant for %s: %s", pending.request.id, exc)

    def submit(self, envelope: Mapping[str, Any]) -> Grant:
        """Answer a pending request with an approver's signed grant or denial.

        Raises ``KeyError`` if no request with the grant's id waits here and
        :class:`SignatureInvalid` if the grant does not hold (nothing changes then).
        """
        claimed = _claimed_request(envelope)
        if claimed is None:
            raise SignatureInvalid(
                "approval grant refused: it is not a signed statement naming a request",
                check="approval.signature",
                source="approval",
            )
        grant = self._verify(envelope, claimed)
        pending = self._take(grant.request)
        name = pending.keys[grant.key_id][0]
        if self.board is not None:
            self.board.decide(grant.request, grant.decision, name, grant.reason, grant.envelope)
        else:
            self._answer(pending, grant, name)
        return grant

    def _verify(self, envelope: object, request_id: str | None) -> Grant:
        pending = self._pending.get(request_id) if request_id is not None else None
        if pending is None or pending.event.is_set():
            raise KeyError(f"no pending approval request {request_id!r}")
        keys = {kid: public for kid, (_, public) in pending.keys.items()}
        if not keys:
            raise SignatureInvalid(
                f"approval grant refused: the policy declares no approver key for rule "
                f"{pending.request.rule_id!r} (the runtime's own key never approves)",
                run_id=pending.request.run_id,
                check="approval.signature",
                source="approval",
            )
        try:
            grant = open_grant(envelope, keys)
        except ValueError as exc:
            raise SignatureInvalid(
                f"approval grant refused: {exc}",
                run_id=pending.request.run_id,
                check="approval.signature",
                source="approval",
            ) from None
        if grant.request != pending.request.id or grant.action != pending.request.action_digest:
            raise SignatureInvalid(
                f"the grant signs request {grant.request} and action {grant.action[:19]}, not "
                f"the held {pending.request.id} / {pending.request.action_digest[:19]} (other "
                "arguments, rule or policy): refused",
                run_id=pending.request.run_id,
                check="approval.action",
                source="approval",
            )
        return grant

    def resolve(
        self,
        request_id: str,
        decision: str,
        approver: str,
        reason: str,
        envelope: Mapping[str, Any] | None = None,
    ) -> None:
        """Apply a decision that came back from the board (verified here first)."""
        pending = self._pending.get(request_id)
        if pending is None or pending.event.is_set():
            return
        if decision == "timeout":  # another waiter's timeout won: this wait times out too
            pending.event.set()
            return
        try:
            grant = self._verify(envelope, request_id)
        except (SignatureInvalid, KeyError) as exc:
            _log.warning(
                "ignoring decision %s of %s by %s: %s", decision, request_id, approver, exc
            )
            return
        self._answer(pending, grant, pending.keys[grant.key_id][0])

    def _answer(self, pending: _Pending, grant: Grant, name: str) -> None:
        if grant.decision == "granted":
            pending.granted_index = self._record_answer(pending, APPROVAL_GRANTED, name, grant)
        else:
            self._record_answer(pending, APPROVAL_DENIED, name, grant)
            pending.denied = f"denied by {name} (key {grant.key_id}): {grant.reason}"
        pending.event.set()

    def _take(self, request_id: str) -> _Pending:
        pending = self._pending.get(request_id)
        if pending is None or pending.event.is_set():
            raise KeyError(f"no pending approval request {request_id!r}")
        return pending

    def _span(self, pending: _Pending) -> Any:
        step = pending.step
        return step.parent.span if step.parent is not None else pending.run.span

    def _record_answer(self, pending: _Pending, kind: str, name: str, grant: Grant) -> int:
        req = pending.request
        self._span(pending).event(EVENT_APPROVAL, approval_event(req.id, grant.decision, name))
        return pending.run.record(
            kind,
            {
                "request": req.id,
                "step": req.step,
                "approver": name,
                "approver_key": grant.key_id,
                "reason": grant.reason,
                "envelope": dict(grant.envelope),
            },
            self._span(pending),
        )

    def _record_timeout(self, pending: _Pending, reason: str) -> None:
        # The runtime's own statement that nobody answered: a denial, which it may sign.
        req = pending.request
        statement = {
            "request": req.id,
            "run": req.run_id,
            "step": req.step,
            "target": req.target,
            "decision": "denied",
            "approver": "timeout",
            "reason": reason,
            "at": wall_us(),
        }
        envelope = sign_envelope(self._key, APPROVAL_PAYLOAD_TYPE, canonical(statement))
        self._span(pending).event(EVENT_APPROVAL, approval_event(req.id, "denied", "timeout"))
        pending.run.record(
            APPROVAL_DENIED,
            {
                "request": req.id,
                "step": req.step,
                "approver": "timeout",
                "reason": reason,
                "envelope": envelope,
            },
            self._span(pending),
        )
