"""The data a run is made of: governance state, live leases, steps, value digests.

Invariants:

- A :class:`LeaseState` deadline is a ``time.monotonic`` deadline, converted once when a
  lease generation is adopted and never later than the run's hard deadline: a wall-clock
  jump cannot move it.
- A :class:`Step` holds its arguments as a canonical snapshot (``tenure.crypto._snapshot``)
  taken before the decision; it binds them by parameter name only when a policy needs them.
- :func:`value_digest` (``tenure.crypto._values``) is the one digest of arguments and
  results: type-tagged, injective over canonical values, never raising; raw content never
  reaches the evidence.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from time import monotonic
from typing import TYPE_CHECKING, Any

from ...agents._decorators import Agent, Tool
from ...crypto import Snapshot, value_digest
from ...lineage._spans import SpanHandle
from ._lease import Lease, wall_us

if TYPE_CHECKING:
    from ...policies import PolicySet

__all__ = [
    "GOVERNED_RUN",
    "NO_LEASE",
    "ForeignTarget",
    "GovState",
    "LeaseState",
    "Step",
    "value_digest",
]

#: The id of the run whose governed task is executing, ``None`` outside governed code. Set
#: once in each run's root task and inherited by every task and worker thread of the run,
#: so the runtime can refuse calls that governed code makes into its own authority.
GOVERNED_RUN: ContextVar[str | None] = ContextVar("tenure_governed_run", default=None)

_INF = float("inf")


class GovState:
    """Runtime-wide governance state that every gate reads (one object, few fields).

    ``watchdog_deadline`` is the one deadline a gate compares on each resumption: the
    earlier of the watchdog's heartbeat and this process's control-plane deadline (when a
    shared backend holds its liveness lease), so stretching governance across hosts adds
    nothing per await. Set the two parts, never the fold itself.
    """

    __slots__ = ("control_deadline", "epoch", "heartbeat_deadline", "policy", "watchdog_deadline")

    def __init__(self, policy: PolicySet) -> None:
        self.epoch = 0
        self.policy = policy
        self.heartbeat_deadline = _INF
        #: monotonic end of this process's authority from the control plane (inf: none)
        self.control_deadline = _INF
        self.watchdog_deadline = _INF

    def set_heartbeat(self, deadline: float) -> None:
        """The watchdog beat (``-inf`` when it died)."""
        self.heartbeat_deadline = deadline
        self.watchdog_deadline = min(deadline, self.control_deadline)

    def set_control(self, deadline: float) -> None:
        """The control-plane deadline after a renewal, a loss or a rejoin."""
        self.control_deadline = deadline
        self.watchdog_deadline = min(self.heartbeat_deadline, deadline)


class LeaseState:
    """The live, mutable view of one lease: current generation and monotonic deadline.

    ``bound`` is the exact parent generation the current generation's claims bind (its
    ``parent`` digest): a parent renewed since then has moved on, and the child is checked
    against the generation it was issued under, never against a later one.
    """

    __slots__ = ("active", "bound", "deadline", "lease", "parent", "revoked", "step")

    def __init__(
        self,
        lease: Lease,
        parent: LeaseState | None,
        hard_deadline: float,
        now_us: int | None = None,
    ) -> None:
        self.lease = lease
        self.parent = parent
        self.bound: Lease | None = parent.lease if parent is not None else None
        self.revoked = False
        self.active = True
        self.step: Step | None = None
        self.deadline = _mono_deadline(lease.claims.exp, hard_deadline, now_us)

    def adopt(
        self,
        lease: Lease,
        hard_deadline: float,
        now_us: int | None = None,
        bound: Lease | None = None,
    ) -> None:
        """Switch to a renewed generation (bound to the parent generation ``bound``)."""
        self.lease = lease
        if bound is not None:
            self.bound = bound
        self.deadline = _mono_deadline(lease.claims.exp, hard_deadline, now_us)

    @property
    def id(self) -> str:
        """The lease id."""
        return self.lease.claims.lid


def _mono_deadline(exp_us: int, hard_deadline: float, now_us: int | None = None) -> float:
    # Convert once at adoption: later wall-clock jumps cannot move a monotonic deadline.
    # ``now_us`` must be on the lease's own clock (a run's lease_clock_us).
    now = wall_us() if now_us is None else now_us
    return min(monotonic() + (exp_us - now) / 1e6, hard_deadline)


class ForeignTarget:
    """What a foreign call targets: a framework's tool or a model, known only by name.

    Its arguments arrive as one mapping (a tool call's JSON arguments), bound as given.
    """

    __slots__ = ("kind", "name", "scopes")

    def __init__(self, kind: str, name: str, scopes: frozenset[str]) -> None:
        self.kind = kind
        self.name = name
        self.scopes = scopes

    @property
    def qualified(self) -> str:
        """``"tool:<name>"`` or ``"model:<name>"``: how evidence and errors name it."""
        return f"{self.kind}:{self.name}"

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The arguments by name: the mapping the framework passed."""
        return dict(kwargs)


@dataclass(slots=True)
class Step:
    """One governed agent invocation, tool call or model call."""

    id: str
    action: str
    target: Agent | Tool | ForeignTarget
    parent: Step | None
    lease: LeaseState
    depth: int
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    span: SpanHandle
    caller: str | None = None
    bound: dict[str, Any] | None = field(default=None)
    approved: bool = False  # a person granted its require_approval decision
    args_digest: str = ""
    rule: str = ""
    reason: str = ""  # the decision's reason (recorded with the rule)
    decision: int = -1  # index of the step's own decision record (-1: carried in step.start)
    pool: str | None = None  # delegated to a worker of this pool (``on="pool:NAME"``)
    #: the canonical arguments the step was decided on; the body gets ``snapshot.thaw()``
    snapshot: Snapshot | None = None
    call: str = ""  # a foreign call's own id (the framework's tool-call id)
    framework: str = ""  # who made a foreign call ("mcp", "pydantic-ai", ...)

    def bound_args(self) -> dict[str, Any]:
        """Arguments by parameter name (bound lazily: only policies with conditions need it)."""
        if self.bound is None:
            self.bound = self.target.bind(self.args, self.kwargs)
        return self.bound


class _NoLease:
    """Stand-in lease holder for the root step's decision (taken before any lease exists)."""

    __slots__ = ()
    id = ""
    revoked = False
    deadline = _INF


#: The root step is decided before its lease exists; its decision names no lease.
NO_LEASE: Any = _NoLease()
