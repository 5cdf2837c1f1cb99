"""Delegation to a pool, the delegating side: queue the step, wait for its worker, record.

``ctx.delegate(agent, ..., on="pool:NAME")`` is decided, recorded and given its narrowed,
signed child lease here exactly as a local delegation is; only its body differs: instead
of running the agent, :class:`PoolDelegator` records ``delegation.queued`` (the child's
expected segment), makes that durable, queues the task and waits — under the step's gate,
so a revocation or any stop of the run ends the wait at once and revokes the child's lease
in the governance log, which stops it on its worker.

How it ends is recorded too: ``delegation.returned`` with the child segment's final size
and signed checkpoint (so the delegating segment commits to the child's), or
``delegation.lost`` with the durable prefix of a child whose worker was lost. A lost child
raises ``GovernanceUnavailable`` (check ``worker.lost``): its side effects are unknown and it
is never run again.

Arguments and results travel as JSON: JSON values and pydantic models (sent as their JSON
form); anything else is refused at the call (``TypeError`` naming the parameter).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import anyio

from ... import _errors
from ..._errors import GovernanceUnavailable, GovernanceViolation
from ...crypto import b64e, sign_envelope
from ...evidence._format import (
    DELEGATION_LOST,
    DELEGATION_QUEUED,
    DELEGATION_RETURNED,
    LEASE_PAYLOAD_TYPE,
)
from ._types import TaskOutcome

if TYPE_CHECKING:
    from ...agents import Agent
    from ...crypto import SigningKey
    from ...lineage._spans import Lineage
    from ..kernel._control import RunControl
    from ..kernel._lease import Lease
    from ..kernel._state import LeaseState, Step
    from ._link import BackendLink

__all__ = ["PoolDelegator", "error_of", "raise_remote", "to_wire"]

_POLL = 1.0  # seconds between outcome reads when no notification arrives
_TRANSIENT = frozenset({"backend.unreachable", "backend.error"})


def to_wire(value: Any, where: str = "value") -> Any:
    """``value`` as JSON (pydantic models by their JSON form); ``TypeError`` otherwise."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise TypeError(f"{where} is {value!r}: JSON has no NaN or infinity")
        return value
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    if isinstance(value, list | tuple):
        return [to_wire(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{where} has the key {k!r}: JSON object keys are strings")
            out[k] = to_wire(v, f"{where}[{k!r}]")
        return out
    raise TypeError(
        f"{where} is a {type(value).__name__}: what travels to a pool must be a JSON value "
        "or a pydantic model"
    )


def error_of(exc: BaseException) -> dict[str, str]:
    """An exception as a task's error (class name, check, reason, source)."""
    if isinstance(exc, GovernanceViolation):
        return {
            "type": type(exc).__name__,
            "check": exc.check,
            "reason": exc.reason,
            "source": exc.source,
        }
    return {"type": type(exc).__name__, "check": "", "reason": str(exc)[:500], "source": ""}


def raise_remote(error: Mapping[str, Any], where: str) -> None:
    """Raise a worker's error here: the same governance class, else ``RuntimeError``."""
    name = str(error.get("type", ""))
    reason = str(error.get("reason", ""))
    cls = getattr(_errors, name, None)
    if isinstance(cls, type) and issubclass(cls, GovernanceViolation):
        raise cls(
            reason,
            check=str(error.get("check") or "unknown"),
            source=f"{where}:{error.get('source', '')}",
        )
    raise RuntimeError(f"{where}: {name}: {reason}")


def _travelling(lease: Lease, key: SigningKey) -> dict[str, Any]:
    """``lease`` as its own DSSE envelope, the form a worker verifies alone.

    A lease signed in a batch (:mod:`tenure.evidence._batch`) is signed again on its own:
    the same payload, so the same lease (its digest, which a child binds, is unchanged).
    """
    if lease.batch is None:
        return lease.envelope
    return sign_envelope(key, LEASE_PAYLOAD_TYPE, lease.payload)


def _chain(state: LeaseState, key: SigningKey) -> list[dict[str, Any]]:
    """The delegated lease and every ancestor, root first: each the exact generation its
    child's claims bind (a parent renewed since then has moved on), each its own envelope."""
    chain = [_travelling(state.lease, key)]
    bound, parent = state.bound, state.parent
    while parent is not None and bound is not None:
        chain.append(_travelling(bound, key))
        bound, parent = parent.bound, parent.parent
    chain.reverse()
    return chain


class PoolDelegator:
    """The :class:`~tenure.runtime.kernel._control.RemoteRunner` of a runtime with a backend."""

    def __init__(
        self,
        link: BackendLink,
        key: SigningKey,
        lineage: Lineage,
        code_digest: Callable[[Agent], str],
        upstream: Callable[[str], Iterable[str]],
    ) -> None:
        self._link = link
        self._key = key
        self._lineage = lineage
        self._code_digest = code_digest
        self._upstream = upstream
        issuer: dict[str, Any] = {"key": key.key_id, "pubkey": b64e(key.public_raw)}
        if link.certificate is not None:
            issuer["certificate"] = link.certificate
        self._issuer = issuer

    def check(self, agent: Agent, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Refuse arguments that cannot travel (``TypeError`` naming the parameter)."""
        for name, value in agent.bind(args, kwargs).items():
            to_wire(value, f"argument {name!r} of {agent.qualified}")

    async def run_agent(
        self,
        run: RunControl,
        step: Step,
        agent: Agent,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        link = self._link
        pool = step.pool
        assert pool is not None
        lease = step.lease.lease
        segment = f"{run.id}.{step.id}.{secrets.token_hex(4)}"
        index = run.record(
            DELEGATION_QUEUED, {"step": step.id, "pool": pool, "segment": segment}, step.span
        )
        await link.ship(run)  # the expected segment is durable before it is queued
        payload = {
            "agent": agent.name,
            "code": self._code_digest(agent),
            "args": to_wire(list(args)),
            "kwargs": to_wire(kwargs),
            "run": run.id,
            "principal": run.principal,
            "lease": _travelling(lease, self._key),
            "lease_id": lease.claims.lid,
            "chain": _chain(step.lease, self._key),
            "upstream": sorted(self._upstream(run.evidence_name)),
            "issuer": self._issuer,
            "segment": segment,
            "parent_segment": run.evidence_name,
            "parent_index": index,
            "ttl": max(0.0, run.hard_deadline - anyio.current_time()),
            "trace": self._lineage.carrier(step.span),
        }
        queue = link.backend.queue
        task_id = await queue.enqueue(link.member(), pool, run.id, payload)
        try:
            outcome = await self._wait(task_id)
        except (Exception, anyio.get_cancelled_exc_class()):
            # The delegating step stopped (revoked, run stopped, cancelled): so does the child.
            link.publish_revocation(lease.claims.lid, "its delegating step stopped", run.id)
            raise
        return await self._settle(run, step, agent, segment, outcome)

    async def _wait(self, task_id: str) -> TaskOutcome:
        queue = self._link.backend.queue
        while True:
            try:
                outcome = await queue.wait_outcome(task_id, _POLL)
            except GovernanceViolation as exc:
                if exc.check not in _TRANSIENT:
                    raise  # the run's own stop, thrown in by its gate
                # The backend is not answering: keep waiting (each resumption is gated, so
                # this process's own lease ends the wait if it does not come back).
                await anyio.sleep(_POLL / 4)
                continue
            if outcome.state not in ("queued", "claimed"):
                return outcome

    async def _settle(
        self, run: RunControl, step: Step, agent: Agent, segment: str, outcome: TaskOutcome
    ) -> Any:
        evidence = self._link.backend.evidence
        try:
            lines, note = await evidence.records(segment)
        except (KeyError, GovernanceViolation):
            lines, note = [], None
        fields = {
            "step": step.id,
            "task": outcome.id,
            "segment": segment,
            "size": len(lines),
            "checkpoint": note or "",
        }
        where = f"worker of {agent.qualified} ({outcome.claimer or 'unclaimed'})"
        if outcome.state == "lost":
            run.record(DELEGATION_LOST, fields, step.span)
            raise GovernanceUnavailable(
                f"the worker running {agent.qualified} (task {outcome.id}) was lost: its "
                f"liveness lapsed; the step's outcome is unknown and it is not run again "
                f"({len(lines)} records of its segment are durable)",
                lease_id=step.lease.id,
                check="worker.lost",
                task=agent.qualified,
                source="backend",
            )
        run.record(DELEGATION_RETURNED, {**fields, "status": outcome.state}, step.span)
        if outcome.state == "done":
            return outcome.result
        raise_remote(outcome.error or {}, where)
        raise AssertionError("unreachable")
