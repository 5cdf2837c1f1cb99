"""The per-resumption checks of a run, and the policy re-decision of its live steps.

Invariants:

- A check that fails stops the run (fail closed) and returns that stop; it never raises on
  the watchdog's path, and a fault of the policy engine is a stop, never an allow.
- A task that was already told of the stop and still tries to start a step is recorded as
  uncooperative before the stop is raised to it again.
"""

from __future__ import annotations

from time import monotonic
from typing import TYPE_CHECKING

import anyio

from ..._errors import (
    GovernanceUnavailable,
    GovernanceViolation,
    LeaseExpired,
    LeaseRevoked,
    PolicyDenied,
)
from ...evidence._format import VIOLATION
from ._runstate import RunState
from ._state import LeaseState, Step

if TYPE_CHECKING:
    from ...policies import Decision, PolicySet
    from ._gate import Gate

__all__ = ["RunChecks", "stands"]


class RunChecks(RunState):
    """A run's checks: the gate's slow path, lease conditions, policy re-decisions."""

    def failed_check(self, gate: Gate) -> GovernanceViolation | None:
        """Slow path of the check in :func:`governed`: find what failed, or revalidate."""
        violation = self.check_lease(gate.lease, gate.task)
        if violation is None:
            gate.epoch = self.gov.epoch
        return violation

    def check_lease(self, lease: LeaseState, task: str) -> GovernanceViolation | None:
        """Every per-resumption condition for ``lease``; stops the run on the first failure."""
        if self.stop is not None:
            return self.stop
        if lease.revoked:
            return self.fail(
                LeaseRevoked(
                    "the lease was revoked",
                    lease_id=lease.id,
                    check="lease.revoked",
                    task=task,
                    source="gate",
                )
            )
        now = monotonic()
        if now >= lease.deadline:
            return self.fail(self._expired(lease, task, now))
        if now >= self.gov.control_deadline:
            return self.fail(
                GovernanceUnavailable(
                    "this process's control-plane lease was not renewed in time: the "
                    "governance backend stopped acknowledging it, so its authority ended "
                    "on its own clock",
                    lease_id=lease.id,
                    check="backend.liveness",
                    task=task,
                    source="gate",
                )
            )
        if now >= self.gov.watchdog_deadline:
            return self.fail(
                GovernanceUnavailable(
                    "the watchdog heartbeat is late: governance cannot be vouched for",
                    lease_id=lease.id,
                    check="watchdog.heartbeat",
                    task=task,
                    source="gate",
                )
            )
        if self.validated_epoch != self.gov.epoch:
            self.revalidate()
        return self.stop

    def _expired(self, lease: LeaseState, task: str, now: float) -> LeaseExpired:
        if now >= self.hard_deadline:
            return LeaseExpired(
                f"the run's ttl of {self.ttl:g}s is exhausted",
                lease_id=lease.id,
                check="run.ttl",
                task=task,
                source="gate",
            )
        return LeaseExpired(
            "the lease expired before it was renewed",
            lease_id=lease.id,
            check="lease.expiry",
            task=task,
            source="gate",
        )

    # -- decisions ------------------------------------------------------------------------

    def revalidate(self) -> None:
        """Re-decide every live step under the current policy set (after an epoch bump)."""
        if self.validated_epoch == self.gov.epoch or self.stop is not None:
            return
        policy = self.gov.policy
        for step in list(self.steps.values()):
            decision = self.redecide(policy, step)
            if decision is None:
                return
            if not stands(decision, step):
                self.fail(
                    PolicyDenied(
                        f"policy {policy.digest[:19]} no longer allows live step {step.id} "
                        f"({step.target.qualified}): {decision.reason}",
                        lease_id=step.lease.id,
                        check=f"rule:{decision.rule_id}",
                        task=step.target.qualified,
                        source="policy-reload",
                    )
                )
                return
        self.validated_epoch = self.gov.epoch

    def redecide(
        self, policy: PolicySet, step: Step, doing: str = "re-deciding live step"
    ) -> Decision | None:
        """Decide ``step``; a policy engine fault stops the run (``None`` is returned then).

        Never falls through to allow, and never raises: the watchdog calls it too.
        """
        try:
            args = step.bound_args() if policy.uses_args else None
            return policy.decide(self.principal, step.action, step.target.name, step.caller, args)
        except Exception as exc:
            self.fail(
                GovernanceUnavailable(
                    f"the policy engine failed while {doing} {step.id} "
                    f"({step.target.qualified}): {type(exc).__name__}: {exc}",
                    lease_id=step.lease.id,
                    check="policy.engine",
                    task=step.target.qualified,
                    source="policy",
                )
            )
            return None

    def note_uncooperative(self, gate: Gate, how: str) -> None:
        """Record that a task kept going after its stop (tried to act, or outran the grace)."""
        self.try_record(
            VIOLATION,
            {
                "error": "Uncooperative",
                "check": "task.uncooperative",
                "reason": f"{gate.task} {how}",
                "lease": gate.lease.id,
                "task": gate.task,
                "source": "gate",
            },
        )

    def ensure_live(self, caller: Step | None, gate: Gate | None = None, what: str = "") -> None:
        """Raise the stop (or the caller's failed check) before a new step starts.

        A task that was already told of the stop (``gate.stopped``) and still tries to act
        is recorded as uncooperative.
        """
        if self.stop is not None:
            if gate is not None and gate.stopped is not None:
                self.note_uncooperative(gate, f"tried to start {what} after the stop")
            raise self.stop_error()
        if self.cancelled_reason is not None:
            # The caller went away: no new step starts, even if an agent swallowed the
            # cancellation and tries to go on.
            raise anyio.get_cancelled_exc_class()(f"run {self.id}: {self.cancelled_reason}")
        if caller is not None:
            violation = self.check_lease(caller.lease, caller.target.qualified)
            if violation is not None:
                raise violation


def stands(decision: Decision, step: Step) -> bool:
    """Whether a live step may go on: allowed, or approval required and already granted."""
    return decision.effect == "allow" or (decision.effect == "require_approval" and step.approved)
