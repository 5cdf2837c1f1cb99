"""A runtime's link to a shared backend: its membership, and the events it sends and applies.

With a backend, a :class:`~tenure.Runtime` is a member of the control plane (a
:class:`~._control.ControlPlane` with no pool). Its deadline is folded into the check every
gate already makes (:meth:`GovState.set_control`), so when the backend stops acknowledging
it every governed task of this process stops on its own clock, and sleeping ones are
stopped by ``on_expired``.

- Out: a revocation made here (``rt.revoke``) is applied locally at once and appended to
  the governance log, so every other host holding the run or lease stops too; a policy
  reload publishes the set's documents by digest and appends a ``policy.epoch``.
- In: every ``revoke`` is applied to the runs and leases this process holds (the ones it
  sent itself come back and find their run stopped already); a ``policy.epoch`` whose
  digest is not the set in force is loaded by digest and reloaded (a set that cannot be
  fetched, or whose documents do not hash to the digest, stops every live run).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from time import monotonic
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import anyio.abc

from ..._errors import GovernanceUnavailable, GovernanceViolation, PolicyDenied
from ...crypto import b64e
from ...evidence._format import STEP_START
from ...policies import PolicyError, PolicySet
from ._control import ControlPlane
from ._protocols import Backend
from ._segment import MirrorOps, SegmentWriter
from ._types import Debit, GovEvent, Member, RateWindow, SegmentInfo

if TYPE_CHECKING:
    from ...crypto import SigningKey
    from ...evidence._fork import ForkingLedger
    from ..kernel._control import RunControl
    from ..kernel._state import Step

__all__ = [
    "BackendLink",
    "LinkHost",
    "SegmentLink",
    "policy_documents",
    "policy_from_documents",
]

_log = logging.getLogger("tenure.backend")

_MAX_TEXT = 500
_PUBLISH_ATTEMPTS = 20


@dataclass(frozen=True, slots=True)
class SegmentLink:
    """Where a delegated part of a run came from (its ``segment.start`` record)."""

    segment: str
    parent_segment: str
    parent_index: int
    task: str
    pool: str
    lease: Mapping[str, Any]
    issuer: str

    def record(self) -> dict[str, Any]:
        """The ``segment.start`` fields."""
        return {
            "segment": self.segment,
            "parent_segment": self.parent_segment,
            "parent_index": self.parent_index,
            "task": self.task,
            "pool": self.pool,
            "lease": dict(self.lease),
            "issuer": self.issuer,
        }


class LinkHost(Protocol):
    """What the link may ask of its runtime."""

    def apply_revocation(self, target: str, reason: str, by: str) -> bool:
        """Revoke ``target`` if this process holds it (idempotent); whether it did."""
        ...

    def apply_policy(self, policy: PolicySet) -> None:
        """Put a policy set published elsewhere in force here (no re-publishing)."""
        ...

    def policy_digest(self) -> str:
        """The digest of the set in force."""
        ...

    def current_policy(self) -> PolicySet:
        """The set in force."""
        ...

    def awaits_approval(self, request_id: str) -> bool:
        """Whether a step here waits on that request."""
        ...

    def apply_approval(
        self,
        request_id: str,
        decision: str,
        approver: str,
        reason: str,
        envelope: Mapping[str, Any] | None = None,
    ) -> None:
        """Apply a request's one decision (verified, recorded, then the step released or
        refused)."""
        ...

    def stop_all(self, violation: Callable[[], GovernanceViolation]) -> None:
        """Stop every live run with its own ``violation()``."""
        ...


def policy_documents(policy: PolicySet) -> list[dict[str, str]]:
    """The documents a policy set was loaded from (``name``, ``text``), in load order.

    Raises ``ValueError`` for a set built from text in memory: other hosts could not
    load the very same documents.
    """
    if not policy.sources:
        raise ValueError(
            "a policy set built in memory (PolicySet.from_text) cannot be shared through a "
            "backend: load it from a file or folder so every host reads the same documents"
        )
    return [{"name": p.name, "text": Path(p).read_text(encoding="utf-8")} for p in policy.sources]


def policy_from_documents(digest: str, documents: list[dict[str, str]]) -> PolicySet:
    """Rebuild a published set; ``PolicyError`` unless it hashes to ``digest``."""
    from ...policies._loader import load_text, merge

    files = [load_text(d["text"], f"{digest[:19]}/{d['name']}") for d in documents]
    policy = PolicySet(merge(files), ())
    if policy.digest != digest:
        raise PolicyError(
            f"<policy {digest}>",
            None,
            f"the published documents hash to {policy.digest}, not to the epoch's digest",
        )
    return policy


class BackendLink:
    """See the module docstring."""

    def __init__(
        self,
        backend: Backend,
        host: LinkHost,
        set_deadline: Callable[[float], None],
        *,
        ttl: float,
        margin: float,
        interval: float,
        name: str = "",
        pool: str | None = None,
        info: Mapping[str, Any] | None = None,
    ) -> None:
        self.backend = backend
        self._host = host
        self._writers: dict[str, SegmentWriter] = {}
        self._closing: dict[str, anyio.Event] = {}
        #: how long closing waits for the last records to reach the backend
        self.backend_timeout = 10.0
        #: the operator's certificate of this process's key (declared with its segments and
        #: the tasks it queues)
        self.certificate: Any = (info or {}).get("certificate")
        #: every run or lease id the governance log revoked so far (checked on each claim)
        self.revoked: set[str] = set()
        self.plane = ControlPlane(
            backend,
            name=name,
            pool=pool,
            on_event=self._apply,
            on_expired=self._expired,
            on_deadline=set_deadline,
            info={
                "kind": "worker" if pool else "runtime",
                "host": socket.gethostname(),
                "pid": os.getpid(),
                **(info or {}),
            },
            ttl=ttl,
            margin=margin,
            interval=interval,
        )
        self._tg: anyio.abc.TaskGroup | None = None
        self._scope = anyio.CancelScope()

    async def start(self, tg: anyio.abc.TaskGroup) -> None:
        """Join the control plane (raises when the backend cannot be reached) and run it."""
        with anyio.fail_after(self.plane.interval * 10):
            await self.plane.join()
        await tg.start(self._serve)

    async def _serve(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        # The link's own task group (renewals, publishing), inside one cancel scope that
        # ``stop`` cancels before the backend is closed under them.
        with self._scope:
            async with anyio.create_task_group() as tg:
                await tg.start(self.plane.run)
                self._tg = tg
                task_status.started()

    async def stop(self) -> None:
        """Stop renewing and publishing, leave the control plane, close the backend."""
        self._scope.cancel()
        self._tg = None
        with anyio.CancelScope(shield=True):
            await self.plane.leave()
            await self.backend.close()

    # -- out ------------------------------------------------------------------------------

    def publish_revocation(self, target: str, reason: str, by: str) -> None:
        """Append a revocation for every host (in the background; retried while open)."""
        self._spawn(
            self.backend.log.append,
            "revoke",
            {"target": target, "reason": reason[:_MAX_TEXT], "by": by[:_MAX_TEXT]},
        )

    def publish_policy(self, policy: PolicySet, by: str) -> None:
        """Store a reloaded set by digest and append its epoch (in the background)."""
        try:
            documents = policy_documents(policy)
        except (ValueError, OSError) as exc:
            _log.warning("policy %s not shared with other hosts: %s", policy.digest, exc)
            return

        async def publish() -> None:
            await self.backend.policies.put_policy(policy.digest, documents)
            await self.backend.log.append("policy.epoch", {"digest": policy.digest, "by": by})

        self._spawn(publish)

    async def share_policy(self, policy: PolicySet) -> None:
        """Store the set in force by digest, so hosts it delegates to can load it."""
        try:
            documents = policy_documents(policy)
        except (ValueError, OSError) as exc:
            _log.info("policy %s not stored in the backend: %s", policy.digest, exc)
            return
        await self.backend.policies.put_policy(policy.digest, documents)

    def spawn(self, fn: Callable[..., object], *args: object) -> None:
        """Run ``fn(*args)`` against the backend in the background, retried while open."""
        self._spawn(fn, *args)

    def _spawn(
        self, fn: Callable[..., object], *args: object, then: Callable[[], None] | None = None
    ) -> None:
        """Run ``fn(*args)`` in the background, retried with backoff while the backend
        fails; ``then`` runs once it is over (done, given up or cancelled)."""
        tg = self._tg
        if tg is None:  # closing: what is not sent now is covered by the members' leases
            _log.warning(
                "the backend link is closed: %s not published", getattr(fn, "__name__", fn)
            )
            if then is not None:
                then()
            return

        async def attempt() -> None:
            delay = 0.05
            try:
                for n in range(1, _PUBLISH_ATTEMPTS + 1):
                    try:
                        await fn(*args)  # type: ignore[misc]
                        return
                    except GovernanceViolation as exc:
                        _log.warning("publishing to the backend failed (attempt %d): %s", n, exc)
                    await anyio.sleep(delay)
                    delay = min(delay * 2, 2.0)
                _log.error("gave up publishing to the backend after %d attempts", _PUBLISH_ATTEMPTS)
            finally:
                if then is not None:
                    then()

        tg.start_soon(attempt)

    # -- membership, evidence segments and the shared budget -----------------------------

    def member(self) -> Member:
        """This process's current member (refused while its liveness is lost)."""
        member = self.plane.member
        if member is None or not self.plane.live():
            raise GovernanceUnavailable(
                "this process holds no live control-plane lease right now",
                check="backend.liveness",
                source="control-plane",
            )
        return member

    async def open_segment(
        self,
        run: RunControl,
        name: str,
        mirror: MirrorOps,
        ledger: ForkingLedger,
        origin: SegmentLink | None,
        key: SigningKey,
    ) -> None:
        """Open the run's segment in the backend and ship its first records."""
        member = self.member()
        meta: dict[str, Any] = {
            "key": key.key_id,
            "pubkey": b64e(key.public_raw),
            "name": self.plane.name,
        }
        if self.certificate is not None:
            meta["certificate"] = self.certificate
        info = SegmentInfo(
            name,
            run.id,
            member.id,
            origin.parent_segment if origin is not None else "",
            origin.parent_index if origin is not None else -1,
            meta,
        )
        writer = SegmentWriter(self.backend, member, info, mirror, ledger)
        await writer.open()
        await writer.ship_or_stop()
        self._writers[name] = writer

    async def ship(self, run: RunControl) -> None:
        """Make the run's records so far durable in its segment (or stop the run)."""
        writer = self._writers.get(run.evidence_name)
        if writer is None:
            return
        try:
            await writer.ship_or_stop()
        except GovernanceViolation as exc:
            raise run.fail(exc) from None

    async def start_step(self, run: RunControl, step: Step, fields: dict[str, Any]) -> None:
        """Record ``step.start`` and commit it with the step's debit of the run's shared
        budget, in one transaction, before the body runs (else stop the run: refused by
        the budget, or not committed)."""
        writer = self._writers.get(run.evidence_name)
        if writer is None:
            run.record(STEP_START, fields, step.span)
            return
        # A part's root step is its delegating step, counted where that was decided.
        debit = None if writer.info.parent and step.parent is None else self._debit(run, step)
        span = step.span
        deadline = anyio.current_time() + (self.plane.deadline - monotonic())
        try:
            refusal = await writer.start(
                step.id, fields, debit, trace=span.trace_id, span=span.span_id, deadline=deadline
            )
        except GovernanceViolation as exc:
            raise run.fail(exc) from None
        if refusal is not None:
            raise run.fail(
                PolicyDenied(
                    refusal.reason,
                    lease_id=step.lease.id,
                    check=refusal.check,
                    task=step.target.qualified,
                    source="budget",
                )
            )

    def step_left(self, run: RunControl, step: Step) -> None:
        """A step ended: its live task is released with its segment's next commit."""
        writer = self._writers.get(run.evidence_name)
        if writer is not None:
            writer.left(step.id)

    async def flush_segment(self, name: str) -> None:
        """Wait until a finished run's last records are shipped (a worker, before it
        answers, so its parent can record the child's final signed tree head).

        Bounded by the liveness ttl: a backend that cannot take them now does not hold up
        the run's outcome (they are shipped when it can, while this process lives).
        """
        done = self._closing.get(name)
        if done is not None:
            with anyio.move_on_after(self.plane.ttl):
                await done.wait()

    async def drain(self) -> None:
        """Wait (bounded) for every finished run's last records to be shipped."""
        with anyio.move_on_after(self.backend_timeout):
            for done in list(self._closing.values()):
                await done.wait()

    def close_segment(self, name: str) -> None:
        """A run ended: ship its last records (its final checkpoint) in the background."""
        writer = self._writers.pop(name, None)
        if writer is None or self._tg is None:
            return
        done = self._closing[name] = anyio.Event()

        async def last() -> None:
            if not writer.diverged:  # (retried while the backend is away, not then)
                await writer.ship(close=True)

        def over() -> None:
            # Only once every retry is over: a failed first attempt (the database down
            # when the run ended) must not let `drain` close the link under the retries.
            done.set()
            self._closing.pop(name, None)

        self._spawn(last, then=over)

    def _debit(self, run: RunControl, step: Step) -> Debit:
        """What one step takes from its run's budget as every process of the run counts it."""
        policy = self._host.current_policy()
        budgets = policy.budgets
        amounts: dict[str, float] = {"steps": 1}
        limits: dict[str, float] = {}
        if budgets.max_steps is not None:
            limits["steps"] = budgets.max_steps
        if step.action == "execute_tool":
            amounts["tool_calls"] = 1
            if budgets.max_tool_calls is not None:
                limits["tool_calls"] = budgets.max_tool_calls
        rates = tuple(
            RateWindow(key, count, float(per))
            for key, (count, per) in policy.rate_limits.items()
            if fnmatchcase(step.target.name, key)
        )
        return Debit(run.id, amounts, limits, rates, enter=1, max_live=budgets.max_concurrency)

    # -- in -------------------------------------------------------------------------------

    async def _apply(self, event: GovEvent) -> None:
        data = event.data
        if event.kind == "revoke":
            target = data.get("target")
            if isinstance(target, str):
                self.revoked.add(target)
                self._host.apply_revocation(
                    target, str(data.get("reason") or "revoked"), f"log:{data.get('by', '')}"
                )
        elif event.kind == "approval.decided":
            request = data.get("request")
            if isinstance(request, str) and self._host.awaits_approval(request):
                record = await self.backend.approvals.get(request)
                if record is not None and record.decision is not None:
                    self._host.apply_approval(
                        request, record.decision, record.approver, record.reason, record.envelope
                    )
        elif event.kind == "policy.epoch":
            digest = data.get("digest")
            if isinstance(digest, str) and digest != self._host.policy_digest():
                await self.load_policy(digest)

    async def load_policy(self, digest: str) -> None:
        """Load a published set by digest and put it in force (failing closed)."""
        try:
            documents = await self.backend.policies.get_policy(digest)
            if documents is None:
                raise PolicyError(f"<policy {digest}>", None, "no documents stored under it")
            policy = policy_from_documents(digest, documents)
        except PolicyError as exc:
            reason = f"policy epoch {digest[:19]} cannot be loaded here: {exc}"
            self._host.stop_all(
                lambda: GovernanceUnavailable(reason, check="policy.epoch", source="backend")
            )
            return
        self._host.apply_policy(policy)

    def _expired(self) -> None:
        reason = (
            "the governance backend did not acknowledge this process's control-plane lease "
            "in time: its authority ended on its own clock"
        )
        self._host.stop_all(
            lambda: GovernanceUnavailable(reason, check="backend.liveness", source="control-plane")
        )
