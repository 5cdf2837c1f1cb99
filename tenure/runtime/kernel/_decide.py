"""Deciding a new step: budgets, attestation, canonical arguments, scopes, policy, approval.

:meth:`StepDecisions.authorize` runs, in this order and before anything of the step runs:

1. the run's budgets (with a shared backend, the budget all its processes share is debited
   with the step's start: :meth:`~._records.StepRecords.start`);
2. that the target was measured into the run's attestation (model-written code is not);
3. a canonical snapshot of the arguments (the decision, the digest and the body all use
   it); arguments without a canonical form are refused;
4. the scopes the target needs, then the policy decision;
5. a denial is recorded and raised (:class:`PolicyDenied`); a decision that needs an
   approval is recorded and waits for it. An outright allow is recorded with the step's
   start (:meth:`~._records.StepRecords.start_record`).

A denial of a new step refuses that step; a budget exceeded or a policy engine fault stops
the whole run.
"""

from __future__ import annotations

from typing import NoReturn

from ..._errors import GovernanceViolation, PolicyDenied
from ...crypto import NotCanonical, snapshot_call
from ...lineage._names import EVENT_DECISION, decision_event
from ._checks import stands
from ._records import StepRecords
from ._state import ForeignTarget, Step, value_digest

__all__ = ["ARGS_CHECK", "UNATTESTED_CHECK", "StepDecisions"]

#: the check (and rule) of a deny for arguments without a canonical form
ARGS_CHECK = "args.canonical"
#: the check (and rule) of a deny for an agent or tool created after the run started
UNATTESTED_CHECK = "attestation.unattested"


class StepDecisions(StepRecords):
    """How a run decides a new step (see the module docstring)."""

    def over_budget(self, check: str, reason: str, step: Step) -> GovernanceViolation:
        """Stop the run: ``step`` exceeded a budget (returns the stop to raise)."""
        return self.fail(
            PolicyDenied(
                reason,
                lease_id=step.lease.id,
                check=check,
                task=step.target.qualified,
                source="budget",
            )
        )

    async def authorize(self, step: Step, missing_scopes: frozenset[str]) -> int:
        """Decide ``step``; the index of its approval (-1: allowed outright, no approval).

        Raises :class:`PolicyDenied` for a refused step (recorded), or the run's stop.
        """
        if self.decide(step, missing_scopes):
            return -1
        return await self.approve(step)

    def decide(self, step: Step, missing_scopes: frozenset[str]) -> bool:
        """Decide ``step`` without waiting: ``True`` if it is allowed outright; ``False`` if
        it needs an approval (recorded; :meth:`approve` waits for it).

        The steps of a chain are nearly all allowed outright: deciding them needs no
        coroutine of its own. Raises like :meth:`authorize`.
        """
        over = self.tracker.on_step(step.action, step.target.name, step.depth)
        if over is not None:
            raise self.over_budget(over[0], over[1], step)
        # Another framework's tool or a model is not Tenure code: nothing to measure.
        if (
            self.attested is not None
            and step.target not in self.attested
            and not isinstance(step.target, ForeignTarget)
        ):
            self._refuse_unattested(step)
        try:
            snap = step.snapshot = snapshot_call(
                step.args, step.kwargs, opaque=step.action == "invoke_agent"
            )
        except NotCanonical as exc:
            step.args_digest = value_digest([step.args, step.kwargs])
            self._refuse_arguments(step, exc)
        step.args, step.kwargs = snap.args, snap.kwargs
        step.args_digest = value_digest(snap.value())
        if missing_scopes:
            missing = sorted(missing_scopes)
            effect, rule = "deny", f"scope.{missing[0]}"
            reason = (
                f"lease {step.lease.id} lacks scope(s) {missing} that "
                f"{step.target.qualified} requires"
            )
        else:
            decision = self.redecide(self.gov.policy, step, "deciding step")
            if decision is None:
                raise self.stop_error()
            effect, rule, reason = decision.effect, decision.rule_id, decision.reason
        step.rule, step.reason = rule, reason
        parent_span = step.parent.span if step.parent is not None else self.span
        if parent_span.is_recording:  # light spans: no event to build
            parent_span.event(EVENT_DECISION, decision_event(step.target.qualified, effect, rule))
        if effect == "allow":
            return True
        self.record_decision(step, effect, rule, reason, parent_span)
        if effect == "deny":
            raise PolicyDenied(
                f"{step.target.qualified} denied for principal {self.principal!r}: {reason}",
                run_id=self.id,
                lease_id=step.lease.id,
                check=rule if missing_scopes else f"rule:{rule}",
                task=step.target.qualified,
                source="policy",
            )
        return False

    async def approve(self, step: Step) -> int:
        """Wait for the approval a decided ``step`` needs; the index of the grant."""
        epoch = self.gov.epoch
        granted = await self.services.approvals.wait(self, step, step.rule)
        step.approved = True
        if self.gov.epoch != epoch:
            # A reload during the wait: the grant answered the old policy's question.
            self.recheck_after_reload(step)
        return granted

    def _refuse_unattested(self, step: Step) -> NoReturn:
        """Deny a target created after the run started: its code is not in the attestation.

        (Model-written source turned into a tool mid-run would otherwise run unmeasured.)
        """
        step.args_digest = value_digest([step.args, step.kwargs])
        reason = (
            f"{step.target.qualified} was created after the run started, so its code is not "
            "in the run's attestation; define agents and tools before starting the run"
        )
        parent_span = step.parent.span if step.parent is not None else self.span
        step.rule = UNATTESTED_CHECK
        self.record_decision(step, "deny", UNATTESTED_CHECK, reason, parent_span)
        raise PolicyDenied(
            reason,
            run_id=self.id,
            lease_id=step.lease.id,
            check=UNATTESTED_CHECK,
            task=step.target.qualified,
            source="attestation",
        )

    def _refuse_arguments(self, step: Step, exc: NotCanonical) -> NoReturn:
        """Deny a step whose arguments have no canonical form (recorded like any deny)."""
        parent_span = step.parent.span if step.parent is not None else self.span
        step.rule = ARGS_CHECK
        self.record_decision(step, "deny", ARGS_CHECK, str(exc), parent_span)
        raise PolicyDenied(
            f"{step.target.qualified} denied for principal {self.principal!r}: {exc}",
            run_id=self.id,
            lease_id=step.lease.id,
            check=ARGS_CHECK,
            task=step.target.qualified,
            source="policy",
        )

    def recheck_after_reload(self, step: Step) -> None:
        """The policy was reloaded after ``step`` was decided and before it started: the
        step starts only if the policy in force now lets it (a refusal is recorded)."""
        decision = self.redecide(self.gov.policy, step)
        if decision is None:
            raise self.stop_error()
        if stands(decision, step):
            return
        parent_span = step.parent.span if step.parent is not None else self.span
        self.record_decision(step, decision.effect, decision.rule_id, decision.reason, parent_span)
        raise PolicyDenied(
            f"{step.target.qualified} refused for principal {self.principal!r} by the policy "
            f"reloaded before it started ({decision.effect}): {decision.reason}",
            run_id=self.id,
            lease_id=step.lease.id,
            check=f"rule:{decision.rule_id}",
            task=step.target.qualified,
            source="policy",
        )
