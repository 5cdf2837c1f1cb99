"""A pool worker: claims delegated agent steps of a pool and runs each as a governed run part.

``tenure worker --backend URL --agents MODULE --pool NAME`` runs one :class:`PoolWorker`.
It is a :class:`~tenure.Runtime` whose control-plane member serves ``pool``: its liveness
lease, renewal rule, fencing and the stop on its own clock are the runtime's. For each
task it claims (``SKIP LOCKED``; woken by NOTIFY, polling as a backstop) it checks, before
anything runs:

- the agent is one MODULE registered, and its measured code digest is the one the
  delegating process pinned (else ``AttestationMismatch``);
- the lease chain verifies under a key this worker trusts — certified by the operator
  (``operator_key``), else the one the enqueuing member registered in the backend, never
  the payload's own — and, once every governance event up to the claim's revision is
  applied, neither the run nor any lease of the chain is revoked (else ``SignatureInvalid``
  / ``LeaseRevoked``; see ``_claim_check``);
- the policy set the lease was issued under is the one in force here (loaded by digest
  when this worker has no live run; else the task is refused, ``GovernanceUnavailable``).

Then the agent runs governed exactly like a local child, as a part of the run with its own
evidence segment (``segment.start`` first: where it came from, the delegated lease), under
the delegated lease's scopes and the time the run has left; the trace context travels with
the task, so its spans join the delegating trace. The outcome (a JSON result, or the error)
is written fenced by the generation that claimed the task: a worker declared lost meanwhile
cannot answer, and its parent learns ``worker.lost`` instead.

SIGTERM drains: no new claims; running parts finish, or are stopped after
``cleanup_grace``; then the worker leaves the control plane and exits 0.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import anyio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from opentelemetry import context as otel_context
from opentelemetry import propagate

from ..._errors import (
    AttestationMismatch,
    GovernanceUnavailable,
    GovernanceViolation,
    LeaseRevoked,
)
from ...agents._decorators import Agent, registered
from .._runtime import Runtime
from ._claim_check import chain_ids, refuse_revoked, trusted_issuer, verify_chain
from ._delegate import error_of, to_wire
from ._link import BackendLink, SegmentLink
from ._types import ClaimedTask

__all__ = ["PoolWorker"]

_log = logging.getLogger("tenure.worker")

_POLL = 1.0  # seconds between claim attempts when no NOTIFY arrives


class PoolWorker:
    """See the module docstring. Use as ``async with PoolWorker(...) as w: await w.serve()``.

    Args:
        pool: the pool served.
        name: this worker's member name (unique among live members).
        concurrency: parts of runs run at once.
        certificate: the operator's certificate of this worker's key (``tenure keys
            certify``), declared with its membership.
        operator_key: the operator's public key: when given, a task runs only if the key
            that signed its leases carries the operator's certificate.
        Everything else is passed to its :class:`~tenure.Runtime` (``backend`` required).
    """

    def __init__(
        self,
        *,
        pool: str,
        name: str,
        concurrency: int = 4,
        certificate: Any = None,
        operator_key: Ed25519PublicKey | None = None,
        **runtime: Any,
    ) -> None:
        if runtime.get("backend") is None:
            raise ValueError("a pool worker needs a backend (postgresql://...)")
        if not pool or not name:
            raise ValueError(f"a pool worker needs a pool and a name, got {pool!r}, {name!r}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency!r}")
        self.rt = Runtime(**runtime)
        self.pool = pool
        self.name = name
        self.concurrency = concurrency
        self.operator_key = operator_key
        info: dict[str, Any] = {"concurrency": concurrency}
        if certificate is not None:
            info["certificate"] = certificate
        self.rt._identity = (name, pool, info)
        self._draining = anyio.Event()
        self._waiting: anyio.CancelScope | None = None
        self.served = 0

    async def __aenter__(self) -> PoolWorker:
        await self.rt.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.rt.__aexit__(*exc)

    @property
    def link(self) -> BackendLink:
        """The runtime's link to the backend (set while open)."""
        link = self.rt._link
        if link is None:
            raise RuntimeError("use `async with PoolWorker(...)` first")
        return link

    def drain(self) -> None:
        """Stop claiming; :meth:`serve` returns once running parts are done (or were
        stopped after ``cleanup_grace``)."""
        self._draining.set()
        if self._waiting is not None:
            self._waiting.cancel()  # a wait for a free slot or a queued task ends now

    async def serve(self) -> None:
        """Claim and run tasks of the pool until :meth:`drain` (then wait for them)."""
        slots = anyio.Semaphore(self.concurrency)
        async with anyio.create_task_group() as tg:
            while not self._draining.is_set():
                task: ClaimedTask | None = None
                with anyio.CancelScope() as self._waiting:
                    await slots.acquire()
                    try:
                        task = await self._claim()
                    finally:
                        if task is None:
                            slots.release()
                self._waiting = None
                if task is not None:
                    tg.start_soon(self._execute, task, slots)
            await self._finish_running()

    async def _claim(self) -> ClaimedTask | None:
        link = self.link
        try:
            await link.backend.queue.wait_queued(self.pool, _POLL)
            if self._draining.is_set() or not link.plane.live():
                return None
            # A claim that landed is run, never dropped half-way by the drain: left
            # claimed by a worker that then leaves, its parent would wait for it forever.
            with anyio.CancelScope(shield=True):
                claimed = await link.backend.queue.claim(link.member(), self.pool)
            return claimed
        except GovernanceViolation as exc:  # the backend is away: the worker waits it out
            _log.warning("claim failed: %s", exc)
            await anyio.sleep(_POLL / 4)
            return None

    async def _finish_running(self) -> None:
        """Drain: let running parts end, then stop what is left after ``cleanup_grace``."""
        with anyio.move_on_after(self.rt.config.cleanup_grace):
            await self._all_done()
        for run in list(self.rt._runs.values()):
            run.cancel("the worker is draining (SIGTERM)")
        with anyio.move_on_after(5):
            await self._all_done()

    async def _all_done(self) -> None:
        for run in list(self.rt._runs.values()):
            await run.done.wait()

    async def _execute(self, task: ClaimedTask, slots: anyio.Semaphore) -> None:
        link = self.link
        try:
            member = link.member()
        except GovernanceViolation:
            slots.release()
            return
        queue = link.backend.queue
        try:
            try:
                result = await self._run_part(task)
            except GovernanceViolation as exc:
                if exc.source == "worker":  # refused before anything of it ran
                    _log.warning("%s", exc)
                await queue.finish(member, task.id, "failed", error=error_of(exc))
            except Exception as exc:  # the agent's own error travels back to its parent
                await queue.finish(member, task.id, "failed", error=error_of(exc))
            else:
                await queue.finish(member, task.id, "done", result=result)
            self.served += 1
        except GovernanceViolation as exc:  # fenced: this generation was declared lost
            _log.warning("task %s not answered: %s", task.id, exc)
        finally:
            slots.release()

    async def _run_part(self, task: ClaimedTask) -> Any:
        p = task.payload
        link = self.link
        chain = verify_chain(task, trusted_issuer(task, self.operator_key))
        held = chain_ids(task, chain)
        # The renewal rule, applied to the claim: every event up to the revision the claim
        # answered first, so a revocation committed before the claim is never missed.
        await link.plane.catch_up(task.head)
        refuse_revoked(task, held, link.revoked)
        agent = self._agent(p)
        claims = chain[-1]
        await self._adopt_policy(str(claims["policy"]))
        origin = SegmentLink(
            segment=str(p["segment"]),
            parent_segment=str(p["parent_segment"]),
            parent_index=int(p["parent_index"]),
            task=task.id,
            pool=task.pool,
            lease=p["lease"],
            issuer=str(p["issuer"]["key"]),
        )
        token = otel_context.attach(propagate.extract(dict(p.get("trace") or {})))
        try:
            run = await self.rt._open(
                agent,
                tuple(p["args"]),
                dict(p["kwargs"]),
                str(p["principal"]),
                frozenset(claims["scopes"]),
                max(0.001, float(p["ttl"])),
                task.run_id,
                origin.segment,
                origin,
            )
        finally:
            otel_context.detach(token)
        # Revoking the run, any lease of the chain or an upstream one stops the part.
        self.rt._delegated[origin.segment] = held
        if held & link.revoked:
            run.fail(LeaseRevoked("revoked before it started", check="lease.revoked"))
        await run.done.wait()
        await link.flush_segment(origin.segment)
        if run.stop is not None:
            raise run.stop_error()
        if run.cancelled_reason is not None:
            raise GovernanceUnavailable(
                f"worker {self.name} stopped {agent.qualified} before it ended: "
                f"{run.cancelled_reason}",
                check="worker.stopped",
                task=agent.qualified,
                source="worker",
            )
        if run.error is not None:
            raise run.error
        return to_wire(run.result, f"the result of {agent.qualified}")

    def _agent(self, p: Mapping[str, Any]) -> Agent:
        name = p.get("agent")
        agent = next((a for a in registered() if isinstance(a, Agent) and a.name == name), None)
        if agent is None:
            raise GovernanceUnavailable(
                f"worker {self.name} serves no agent named {name!r}",
                check="worker.agent",
                source="worker",
            )
        digest = self.rt._code_digest(agent)
        if digest != p.get("code"):
            raise AttestationMismatch(
                f"{agent.qualified} here measures {digest[:12]}, the delegating process "
                f"pinned {str(p.get('code'))[:12]}: different code must not run",
                check="attestation.code",
                task=agent.qualified,
                source="worker",
            )
        return agent

    async def _adopt_policy(self, digest: str) -> None:
        if digest == self.rt.policy_digest():
            return
        if self.rt._runs:
            raise GovernanceUnavailable(
                f"this worker runs parts under policy {self.rt.policy_digest()[:19]}; a task "
                f"under {digest[:19]} waits for no one here",
                check="policy.epoch",
                source="worker",
            )
        await self.link.load_policy(digest)
        if digest != self.rt.policy_digest():
            raise GovernanceUnavailable(
                f"policy {digest[:19]} could not be loaded", check="policy.epoch", source="worker"
            )
