"""An approver's console: polls ``rt.pending_approvals()`` the way a person's screen would."""

from __future__ import annotations

import anyio

from tenure import ApprovalRequest, Runtime


async def next_request(rt: Runtime) -> ApprovalRequest:
    """The oldest pending request, as soon as one is waiting (bounded)."""
    with anyio.fail_after(10):
        while True:
            pending = rt.pending_approvals()
            if pending:
                return pending[0]
            await anyio.sleep(0.005)
