"""How a run's steps are written to its ledger: decisions, starts, ends, stopped steps.

The records (declared in :mod:`tenure.evidence._format`):

- a step allowed outright is one ``step.start`` that carries its decision (``effect``
  ``allow``, ``rule``, ``reason``, ``caller``; ``decision`` = -1), written and handed to
  the OS before the step's body runs (with a shared backend, committed there together with
  the step's budget debit: :meth:`StepRecords.start`);
- a denial, and a decision that needs an approval, are a ``decision`` record of their own
  (the approval follows it); the ``step.start`` of an approved step names both by index;
- a step's end is a ``step.end`` (buffered: it reaches the OS with the next record);
  steps unwound by the run's stop only note their id and end time, and one
  ``steps.stopped`` record per (error, message, outcome) carries them all at the run's end.
"""

from __future__ import annotations

from time import monotonic
from typing import TYPE_CHECKING, Any

from ...evidence._format import DECISION, STEP_END, STEP_START, STEPS_STOPPED
from ._checks import RunChecks
from ._state import Step, value_digest

if TYPE_CHECKING:
    from ...lineage._spans import SpanHandle

__all__ = ["StepRecords", "call_fields"]


class StepRecords(RunChecks):
    """A run's step records (see the module docstring)."""

    def record_decision(
        self, step: Step, effect: str, rule: str, reason: str, span: SpanHandle
    ) -> int:
        """A decision record of its own (a denial, or one that waits for an approval)."""
        index = self.record(
            DECISION,
            {
                "step": step.id,
                "lease": step.lease.id,
                "action": step.action,
                "target": step.target.name,
                "caller": step.caller or "",
                "effect": effect,
                "rule": rule,
                "reason": reason,
                "args": step.args_digest,
                **call_fields(step),
            },
            span,
        )
        step.decision = index
        return index

    def start_fields(self, step: Step, approval: int) -> dict[str, Any]:
        """The fields of ``step``'s ``step.start``; with no decision record of its own
        (``step.decision`` -1) they carry its allow."""
        fields = {
            "step": step.id,
            "lease": step.lease.id,
            "action": step.action,
            "target": step.target.name,
            "decision": step.decision,
            "approval": approval,
            "parent": step.parent.id if step.parent is not None else "",
            "depth": step.depth,
            "args": step.args_digest,
        }
        if step.decision < 0:
            fields["caller"] = step.caller or ""
            fields["effect"] = "allow"
            fields["rule"] = step.rule
            fields["reason"] = step.reason
        if step.framework:
            fields["call"] = step.call
            fields["framework"] = step.framework
        return fields

    def start_record(self, step: Step, approval: int) -> None:
        """The step starts: its ``step.start``, handed to the OS before its body runs."""
        self.record(STEP_START, self.start_fields(step, approval), step.span, owned=True)

    async def start(self, step: Step, approval: int) -> None:
        """Record the step's start before its body runs.

        With a shared backend the ``step.start`` is committed together with the step's
        debit of the run's budget as every process of the run counts it (one transaction,
        ``services.start_step``); a refusal stops the run.
        """
        start_step = self.services.start_step
        if start_step is None:
            self.start_record(step, approval)
        else:
            await start_step(self, step, self.start_fields(step, approval))

    def end_record(self, step: Step, error: BaseException | None, result: Any = None) -> None:
        """How a step ended: its result's digest, its error, or (stopped) a note for later."""
        if error is None:
            step.span.end(None)
            fields = {
                "step": step.id,
                "status": "ok",
                "result": value_digest(result),
                "error": "",
                "message": "",
            }
            self.record(STEP_END, fields, step.span, flush=False, owned=True)
            return
        stop = self.stop
        if stop is not None and error is stop:
            # The run's one stop instance, raised in every task it ended: thousands of them
            # unwind at once and each only notes its id and end time in the stop's group.
            step.span.end(error)
            group = self._stop_group
            if group is None:
                group = self._stop_group = self._group(type(error).__name__, _message(error))
            group[0].append(step.id)
            group[1].append(monotonic())
            return
        step.span.end(stop if stop is not None else error)
        if stop is not None or self.cancelled_reason:
            # One ``steps.stopped`` record per (error, message) carries them (record_stopped).
            self._note_stopped(step, type(error).__name__, _message(error), "cleaned")
            return
        message = _message(error)
        fields = {
            "step": step.id,
            "status": "error",
            "result": "",
            "error": type(error).__name__,
            "message": message,
        }
        self.try_record(STEP_END, fields, step.span, flush=False)

    def _group(
        self, error: str, message: str, outcome: str = "cleaned"
    ) -> tuple[list[str], list[float]]:
        """The ids and monotonic end times of the steps stopped with (error, message)."""
        key = (error, message, outcome)
        group = self._unwound.get(key)
        if group is None:
            group = self._unwound[key] = ([], [])
        return group

    def _note_stopped(self, step: Step, error: str, message: str, outcome: str) -> None:
        ids, ended = self._group(error, message, outcome)
        ids.append(step.id)
        ended.append(monotonic())

    def record_stopped(self) -> None:
        """Write the ``steps.stopped`` records of the steps the stop ended (at run end).

        Steps still live now belonged to tasks abandoned after the cleanup grace (or that
        never got to unwind): their outcome is ``abandoned``; the others ``cleaned``.
        """
        why = self.stop if self.stop is not None else None
        for step in self.steps.values():
            step.span.end(why)
            error = type(why).__name__ if why is not None else "Cancelled"
            message = str(why)[:500] if why is not None else (self.cancelled_reason or "")
            self._note_stopped(step, error, message, "abandoned")
        self.steps.clear()
        for (error, message, outcome), (ids, ended) in self._unwound.items():
            self.try_record(
                STEPS_STOPPED,
                {
                    "error": error,
                    "message": message,
                    "outcome": outcome,
                    "steps": ids,
                    "ended": self.lease_clock_of(ended),
                },
                flush=False,
            )
        self._unwound.clear()
        self._stop_group = None


def call_fields(step: Step) -> dict[str, str]:
    """A foreign call's own id and framework, for its records (native steps have none)."""
    if not step.framework:
        return {}
    return {"call": step.call, "framework": step.framework}


def _message(error: BaseException) -> str:
    """``str(error)``, at most 500 characters; never raises (a step always gets its end)."""
    try:
        text = str(error)
    except Exception as exc:  # an exception whose __str__ raises still ends its step
        return f"<str() of the error raised {type(exc).__name__}>"
    return text[:500] if isinstance(text, str) else "<str() of the error is not a str>"
