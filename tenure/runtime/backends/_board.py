"""The shared approval board: requests filed in the backend, decided once, from anywhere.

A step that needs approval is filed here as well as recorded in its run's ledger; ``tenure
approvals list|approve|deny --backend URL`` and ``rt.approve``/``rt.deny`` on any host
decide it by one compare-and-set, whose ``approval.decided`` entry in the governance log
brings the decision back to the waiting process, which records it and releases (or
refuses) the step. The waiter's timeout races on the same compare-and-set.

Approvers signed by keys declared in the policy (the approvals work of issue 13) fit here
unchanged: the decided record carries the approver's signed statement (``envelope``),
which the waiting runtime verifies against the policy's keys before it releases the step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._types import ApprovalRecord

if TYPE_CHECKING:
    from ..services._approval_request import ApprovalRequest
    from ._link import BackendLink

__all__ = ["LinkBoard"]


class LinkBoard:
    """:class:`~tenure.runtime.services._approvals.ApprovalBoard` over a backend link."""

    def __init__(self, link: BackendLink) -> None:
        self._link = link

    async def file(self, request: ApprovalRequest, args_digest: str) -> None:
        await self._link.backend.approvals.request(
            self._link.member(),
            ApprovalRecord(
                id=request.id,
                run_id=request.run_id,
                principal=request.principal,
                action=request.action,
                target=request.target,
                rule_id=request.rule_id,
                step=request.step,
                args_digest=args_digest,
                requested_at_us=request.requested_at_us,
                # What an approver elsewhere needs to see and sign (tenure approvals).
                details={
                    "action_digest": request.action_digest,
                    "args": request.args,
                    "args_encoding": request.args_encoding,
                    "policy_digest": request.policy_digest,
                    "approvers": list(request.approvers),
                    "approver_keys": list(request.approver_keys),
                },
            ),
        )

    def decide(
        self,
        request_id: str,
        decision: str,
        approver: str,
        reason: str,
        envelope: Mapping[str, Any] | None = None,
    ) -> None:
        approvals = self._link.backend.approvals

        async def cas() -> None:
            await approvals.decide(
                request_id,
                decision,  # type: ignore[arg-type]
                approver=approver,
                reason=reason,
                envelope=envelope,
            )

        self._link.spawn(cas)

    def withdraw(self, request_id: str) -> None:
        # A decided (or timed-out) request stays in the store as its record of decision.
        return None

    async def time_out(self, request_id: str) -> tuple[str, str, str] | None:
        approvals = self._link.backend.approvals
        won = await approvals.decide(request_id, "timeout", approver="timeout")
        if won is not None:
            return None
        record = await approvals.get(request_id)
        if record is None or record.decision is None:
            return None
        return record.decision, record.approver, record.reason
