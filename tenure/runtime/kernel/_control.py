"""What the services around the kernel may ask of a run, and what a run asks of them.

The kernel never imports a service, and no service imports :mod:`._run`: each side sees
the other only through the Protocols below, so the import graph has no circle (type-only
imports included).

- :class:`RunControl` is all a service (approvals, isolation) may do to a run: read who it
  is, append evidence, and stop it.
- :class:`Approver` and :class:`Isolator` are the two services a governed step calls into;
  :class:`RunServices` bundles the collaborators every run of one runtime shares.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..._errors import GovernanceViolation
    from ...agents import Agent, Tool
    from ...evidence._ledger import Ledger
    from ...lineage._spans import Lineage, SpanHandle
    from .._config import RuntimeConfig
    from ._authority import LeaseAuthority
    from ._pace import Pacer
    from ._state import GovState, Step

__all__ = ["Approver", "Isolator", "RemoteRunner", "RunControl", "RunServices"]


class RunControl(Protocol):
    """A run as a service sees it: identity, evidence, and the fail-closed stop."""

    @property
    def id(self) -> str:
        """The run id."""
        ...

    @property
    def principal(self) -> str:
        """Who authorized the run."""
        ...

    @property
    def evidence_name(self) -> str:
        """The name of the run's evidence directory (its run id, or its segment's id)."""
        ...

    @property
    def hard_deadline(self) -> float:
        """The monotonic end of the run's ttl."""
        ...

    @property
    def span(self) -> SpanHandle:
        """The run's root span."""
        ...

    @property
    def stop(self) -> GovernanceViolation | None:
        """The violation that stopped the run, if it stopped."""
        ...

    @property
    def cancelled_reason(self) -> str | None:
        """Why the run was cancelled by its caller, if it was."""
        ...

    def record(
        self,
        kind: str,
        fields: dict[str, Any],
        span: SpanHandle | None = None,
        *,
        flush: bool = True,
    ) -> int:
        """Append a record; a failed append stops the run and raises the stop."""
        ...

    def try_record(
        self,
        kind: str,
        fields: dict[str, Any],
        span: SpanHandle | None = None,
        *,
        flush: bool = True,
    ) -> None:
        """Append a record on a path that is already stopping (a failure is the stop)."""
        ...

    def fail(self, exc: GovernanceViolation) -> GovernanceViolation:
        """Stop the run with ``exc`` (the first stop wins); returns the stop to raise."""
        ...

    def stop_error(self) -> GovernanceViolation:
        """The run's stop, ready to raise again."""
        ...


class Approver(Protocol):
    """Holds a step whose decision is ``require_approval`` until a person answers."""

    async def wait(self, run: RunControl, step: Step, rule: str) -> int:
        """The ledger index of the grant; raises ``PolicyDenied`` when refused."""
        ...


class Isolator(Protocol):
    """Runs synchronous bodies inline, in a thread or in a worker process."""

    async def call(
        self,
        run: RunControl,
        step: Step,
        tool: Tool,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """The result of a synchronous tool body."""
        ...

    async def run_agent(
        self,
        run: RunControl,
        step: Step,
        agent: Agent,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """The result of a synchronous (isolated) agent body."""
        ...


class RemoteRunner(Protocol):
    """Runs a delegated agent on a worker of a pool (a runtime with a shared backend)."""

    def check(self, agent: Agent, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Refuse (``TypeError``) arguments that cannot travel to another host."""
        ...

    async def run_agent(
        self,
        run: RunControl,
        step: Step,
        agent: Agent,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """Queue the step for its pool, wait for a worker's outcome, return its result."""
        ...


@dataclass(frozen=True, slots=True)
class RunServices:
    """The collaborators every run of one runtime shares (one object, set at start).

    ``close_ledger`` seals a finished run's ledger and makes it durable (off the loop), after
    writing out the file the callable it is given writes (the run's attestation).

    The last three are set only with a shared backend: ``remote`` runs delegations to a
    pool; ``start_step`` records a step's ``step.start`` (its fields given) and commits it
    together with the step's debit of the run's budget as all its processes count it,
    before the body runs (raising the run's stop when refused); ``step_left`` says a
    started step ended (its place among the run's live tasks is released).
    """

    config: RuntimeConfig
    gov: GovState
    authority: LeaseAuthority
    lineage: Lineage
    approvals: Approver
    isolation: Isolator
    wake_watchdog: Callable[[], None]
    pacer: Pacer
    close_ledger: Callable[[Ledger, Callable[[], object] | None], Awaitable[None]]
    remote: RemoteRunner | None = None
    start_step: Callable[[RunControl, Step, dict[str, Any]], Awaitable[None]] | None = None
    step_left: Callable[[RunControl, Step], None] | None = None
