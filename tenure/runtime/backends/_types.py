"""The values that cross the backend boundary, declared once for every implementation.

Everything here is plain data (frozen dataclasses of JSON-able fields), so an in-process
backend and a PostgreSQL one hand the engine exactly the same things.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

__all__ = [
    "EVENT_KINDS",
    "TASK_STATES",
    "ApprovalRecord",
    "Batch",
    "ClaimedTask",
    "Debit",
    "Decision",
    "GovEvent",
    "LostMember",
    "Member",
    "RateWindow",
    "Refusal",
    "SegmentInfo",
    "TaskOutcome",
    "TaskState",
]

#: What the governance log holds. ``revoke``: a run or lease id taken back (``target``,
#: ``reason``, ``by``); ``policy.epoch``: a new policy set by ``digest``;
#: ``approval.decided``: a request's one decision (``request``, ``decision``);
#: ``worker.lost``: a member whose liveness lapsed (``member``, ``generation``, ``tasks``).
EVENT_KINDS: Final = frozenset({"revoke", "policy.epoch", "approval.decided", "worker.lost"})

TaskState = Literal["queued", "claimed", "done", "failed", "lost"]
#: ``lost``: its claimer's liveness lapsed mid-task; side effects unknown, never re-run.
TASK_STATES: Final = ("queued", "claimed", "done", "failed", "lost")

Decision = Literal["granted", "denied", "timeout"]


@dataclass(frozen=True, slots=True)
class GovEvent:
    """One entry of the governance log; ``revision`` orders every entry (no gaps)."""

    revision: int
    kind: str
    data: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Member:
    """A registered process (runtime or worker) and the fencing token of its writes.

    ``generation`` changes exactly when the backend declared the member lost: a write
    carrying an older generation is refused.
    """

    id: str
    generation: int
    name: str = ""
    pool: str | None = None


@dataclass(frozen=True, slots=True)
class LostMember:
    """A member a reaper found lapsed (``generation`` is the one that lapsed)."""

    id: str
    generation: int
    name: str
    pool: str | None
    tasks: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a debit was refused: the limit's check name and a message stating it."""

    check: str
    reason: str


@dataclass(frozen=True, slots=True)
class RateWindow:
    """A sliding window: at most ``count`` admissions in any ``per`` seconds (server time)."""

    key: str
    count: int
    per: float


@dataclass(frozen=True, slots=True)
class Debit:
    """What one step (or one usage report) takes from a run's shared budget.

    ``amounts`` are added to the run's counters (``steps``, ``tool_calls``, ``tokens``,
    ``cost``); ``limits`` are the policy's limits for those counters. A ``reserve`` debit is
    all or nothing: refused when any counter would pass its limit or any ``rates`` window
    is full, and then nothing is taken. A ``record`` debit (usage already spent) is always
    added and reports the limit it passed.

    ``enter`` is how many live governed tasks the step adds to the run's count across every
    process (refused past ``max_live``, its ``max_concurrency``); it is taken only with an
    evidence commit (:meth:`~._protocols.EvidenceSink.commit`), whose segment releases it.
    """

    run_id: str
    amounts: Mapping[str, float]
    limits: Mapping[str, float] = field(default_factory=dict)
    rates: tuple[RateWindow, ...] = ()
    mode: Literal["reserve", "record"] = "reserve"
    enter: int = 0
    max_live: int | None = None

    @property
    def refusable(self) -> bool:
        """Whether any limit could refuse it (else it only counts)."""
        return bool(self.limits or self.rates) or (self.enter > 0 and self.max_live is not None)


@dataclass(frozen=True, slots=True)
class ApprovalRecord:
    """A request for a person's decision, and (once made) its one decision."""

    id: str
    run_id: str
    principal: str
    action: str
    target: str
    rule_id: str
    step: str
    args_digest: str
    requested_at_us: int
    details: Mapping[str, Any] = field(default_factory=dict)
    decision: Decision | None = None
    approver: str = ""
    reason: str = ""
    envelope: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ClaimedTask:
    """A delegated task as its claimer receives it.

    ``enqueued_by`` is the member whose fenced write queued it and ``registered`` what that
    member declared about itself when it joined (its signing key): the backend's word, not
    the payload's. ``head`` is the governance log's head at the claim: every revocation
    committed before the claim is at or below it.
    """

    id: str
    pool: str
    run_id: str
    payload: Mapping[str, Any]
    enqueued_by: str = ""
    registered: Mapping[str, Any] = field(default_factory=dict)
    head: int = 0


@dataclass(frozen=True, slots=True)
class TaskOutcome:
    """Where a delegated task stands; ``result``/``error`` are set once it finished."""

    id: str
    state: TaskState
    claimer: str | None = None
    result: Any = None
    error: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    """One single-writer evidence segment of a run (one per process part of the run).

    ``parent``/``parent_index`` name the parent segment's record that delegated to this
    one (empty for the root segment); ``meta`` holds what the segment's writer declares
    about itself (key id, public key, certificate, lease id).
    """

    id: str
    run_id: str
    member: str
    parent: str = ""
    parent_index: int = -1
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Batch:
    """Records to append to a segment: lines ``first``, ``first + 1``, ... in order.

    ``checkpoint`` is the segment's latest signed checkpoint note (covering at most these
    lines) to store with them. ``instead`` is the alternative continuation from the same
    ``first`` to append when the batch's debit is refused (the record of the refusal), so
    that the hash chain never holds a step that did not start.

    ``leave`` releases that many of the segment's live governed tasks (steps that ended
    since its last commit); ``close`` releases all of them (the segment's last commit).
    """

    segment: str
    first: int
    lines: tuple[bytes, ...]
    checkpoint: str | None = None
    instead: tuple[bytes, ...] = ()
    leave: int = 0
    close: bool = False
