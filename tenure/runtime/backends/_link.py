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
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import anyio
import anyio.abc

from ..._errors import GovernanceUnavailable, GovernanceViolation
from ...policies import PolicyError, PolicySet
from ._control import ControlPlane
from ._protocols import Backend
from ._types import GovEvent

__all__ = ["BackendLink", "LinkHost", "policy_documents", "policy_from_documents"]

_log = logging.getLogger("tenure.backend")

_MAX_TEXT = 500
_PUBLISH_ATTEMPTS = 20


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
    ) -> None:
        self.backend = backend
        self._host = host
        self.plane = ControlPlane(
            backend,
            name="",
            pool=None,
            on_event=self._apply,
            on_expired=self._expired,
            on_deadline=set_deadline,
            info={"kind": "runtime", "host": socket.gethostname(), "pid": os.getpid()},
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

    def _spawn(self, fn: Callable[..., object], *args: object) -> None:
        tg = self._tg
        if tg is None:
            raise RuntimeError("the backend link is not started")

        async def attempt() -> None:
            delay = 0.05
            for n in range(1, _PUBLISH_ATTEMPTS + 1):
                try:
                    await fn(*args)  # type: ignore[misc]
                    return
                except GovernanceViolation as exc:
                    _log.warning("publishing to the backend failed (attempt %d): %s", n, exc)
                await anyio.sleep(delay)
                delay = min(delay * 2, 2.0)
            _log.error("gave up publishing to the backend after %d attempts", _PUBLISH_ATTEMPTS)

        tg.start_soon(attempt)

    # -- in -------------------------------------------------------------------------------

    async def _apply(self, event: GovEvent) -> None:
        data = event.data
        if event.kind == "revoke":
            target = data.get("target")
            if isinstance(target, str):
                self._host.apply_revocation(
                    target, str(data.get("reason") or "revoked"), f"log:{data.get('by', '')}"
                )
        elif event.kind == "policy.epoch":
            digest = data.get("digest")
            if isinstance(digest, str) and digest != self._host.policy_digest():
                await self._load_epoch(digest)

    async def _load_epoch(self, digest: str) -> None:
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
