"""What the runtime lets its operator (and its peers) do to live runs: revoke, answer
approvals, swap the policy set, re-measure the attested inputs.

:class:`RuntimeControls` is the half of :class:`~tenure.Runtime` that acts on runs already
started; the other half (``_runtime.py``) opens and closes the runtime and starts runs. The
attributes declared here are set by ``Runtime``; every method refuses to run before
``async with`` (``_require``), and one called from inside a governed run, other than a run
giving up its own authority, is refused and stops that run (``_refuse_governed_caller``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import anyio

from .._errors import GovernanceUnavailable, GovernanceViolation, LeaseRevoked, PolicyDenied
from ..crypto import SigningKey, sign_grant
from ..evidence._attest import Attestor
from ..evidence._format import (
    POLICY_RELOADED,
)
from ..lineage._names import EVENT_POLICY_RELOADED, policy_event
from ..policies import PolicyError, PolicySet
from ._config import RuntimeConfig
from .backends._link import BackendLink
from .kernel._control import RunServices
from .kernel._run import Run
from .kernel._state import GOVERNED_RUN, GovState
from .services._approval_request import ApprovalRequest
from .services._approvals import Approvals
from .services._revocations import (
    RevocationRequest,
)

__all__ = ["RuntimeControls", "load_policies"]


class RuntimeControls:
    """Revocation, approvals, policy reload and attestation checks (see the module docstring)."""

    config: RuntimeConfig
    policy_source: Path | None
    _runs: dict[str, Run]
    _delegated: dict[str, frozenset[str]]
    _link: BackendLink | None
    _gov: GovState
    _approvals: Approvals
    _attestor: Attestor
    _policy_files: tuple[Path, ...]

    def _require(self) -> RunServices:
        raise NotImplementedError

    def stop_all(self, violation: Callable[[], GovernanceViolation]) -> None:
        """Stop every live run, each with its own ``violation()`` (an error names its run)."""
        for run in list(self._runs.values()):
            run.fail(violation())

    def _refuse_governed_caller(self, what: str) -> None:
        """Refuse (and stop the calling run) when governed code reaches for the runtime.

        A governed task holds only its lease; the runtime's own authority (starting runs
        as any principal, answering approvals, swapping policies) is never its to use.
        """
        caller = GOVERNED_RUN.get()
        if caller is None:
            return
        violation = PolicyDenied(
            f"{what} was called from inside governed run {caller}: governed code may not "
            "use the runtime's own authority (start runs, answer approvals, reload "
            "policies, revoke other runs)",
            run_id=caller,
            check="runtime.reentry",
            source="runtime",
        )
        run = self._runs.get(caller)
        raise run.fail(violation) if run is not None else violation

    # -- governance controls --------------------------------------------------------------

    def revoke(self, run_or_lease_id: str, reason: str = "revoked") -> None:
        """Revoke a run (its root lease) or one lease; takes effect before this returns.

        Without a backend an id this runtime does not hold raises ``KeyError``. With one,
        the revocation is also appended to the governance log (whoever holds the id, on
        any host, stops), so an id held elsewhere is not an error. From governed code,
        only the calling run's own leases (it may give up authority, never stop another
        principal's work).
        """
        caller = GOVERNED_RUN.get()
        if caller is not None and self._holder(run_or_lease_id) is not self._runs.get(caller):
            self._refuse_governed_caller(f"rt.revoke of {run_or_lease_id!r} (not its own run)")
        if self._link is not None:
            # Queued before the local stop's own work (records, cancellations): the other
            # hosts' stop does not wait behind this one's.
            self._link.publish_revocation(run_or_lease_id, reason, "revoke")
        held = self._revoke(run_or_lease_id, reason, "revoke")
        if self._link is None and not held:
            raise KeyError(f"no live run or lease with id {run_or_lease_id!r}")

    def _holder(self, target: str) -> Run | None:
        """The live run whose id, or one of whose leases' ids, is ``target``."""
        self._require()
        return self._runs.get(target) or next(
            (run for run in self._runs.values() if target in run.leases), None
        )

    def _revoke(self, target: str, reason: str, by: str) -> bool:
        """Revoke ``target`` if a live run or lease of this runtime has that id."""
        run = self._holder(target)
        if run is None:
            return False
        if target != run.id:
            run.revoke_lease(target, reason, by)
        elif run.leases:
            run.revoke_lease(next(iter(run.leases)), reason, by)
        else:  # revoked before its root lease was issued (e.g. waiting for approval)
            run.fail(LeaseRevoked(f"revoked: {reason}", check="lease.revoked", source=by))
        return True

    def apply_request(self, request: RevocationRequest) -> bool:
        """Apply a revocation request made outside this process (see ``_revocations``).

        Returns whether this runtime held the target (then the request is spent).
        """
        run = self._holder(request.target)
        if run is None:
            return False
        if run.stop is None:  # a run already stopping does not record a second revocation
            self._revoke(request.target, request.reason, f"request:{request.by}")
        return True

    # -- what the backend link may ask (its LinkHost Protocol) ----------------------------

    def apply_revocation(self, target: str, reason: str, by: str) -> bool:
        """Apply a revocation from the governance log; whether this runtime held it.

        Every part of the run held here stops (a worker may hold several segments of one
        run); a run already stopped records nothing more (its own revocation coming back).
        """
        held = [
            (run, self._delegated.get(name, frozenset()))
            for name, run in list(self._runs.items())
            if run.id == target or target in run.leases or target in self._delegated.get(name, ())
        ]
        for run, delegated in held:
            if run.stop is None:
                if target == run.id or target in delegated:
                    root = next(iter(run.leases), None)
                    if root is not None:
                        run.revoke_lease(root, reason, by)
                    else:
                        run.fail(
                            LeaseRevoked(f"revoked: {reason}", check="lease.revoked", source=by)
                        )
                else:
                    run.revoke_lease(target, reason, by)
        return bool(held)

    def apply_policy(self, policy: PolicySet) -> None:
        """Put a policy epoch published by another host in force here."""
        self._reload(policy, publish=False)

    def policy_digest(self) -> str:
        """The digest of the policy set in force."""
        return self._gov.policy.digest

    def current_policy(self) -> PolicySet:
        """The policy set in force."""
        return self._gov.policy

    def awaits_approval(self, request_id: str) -> bool:
        """Whether a step of this runtime waits on ``request_id``."""
        return any(r.id == request_id for r in self._approvals.pending())

    def apply_approval(
        self,
        request_id: str,
        decision: str,
        approver: str,
        reason: str,
        envelope: Mapping[str, Any] | None = None,
    ) -> None:
        """Apply the one decision the shared board recorded (verified before it applies)."""
        self._approvals.resolve(request_id, decision, approver, reason, envelope)

    def reload_policies(self, path_or_policyset: str | Path | PolicySet) -> None:
        """Swap the policy set: bump the epoch and re-decide every live step at once.

        An invalid file stops every live run (fail closed) and raises the
        :class:`PolicyError`, unless ``keep_last_good_policy`` is set, in which case the
        previous set stays in force and the error is raised. Live runs keep their counters
        but are held to the new set's budgets from now on (rate-limit windows are kept as
        they were at the run's start).
        """
        self._reload(path_or_policyset, publish=True)

    async def reload_policies_async(self, path_or_policyset: str | Path | PolicySet) -> None:
        """:meth:`reload_policies`, with the file read, validated and compiled off the loop.

        A big policy (thousands of rules) takes long enough to parse and compile that doing
        it on the event loop would stall every live run; here it happens in a worker thread
        and only the swap (epoch bump, re-decision of live steps) runs on the loop, in one
        step: no decision ever sees half of the new set. Same failure rules as
        :meth:`reload_policies`.
        """
        self._require()
        self._refuse_governed_caller("rt.reload_policies_async")
        try:
            policy = await anyio.to_thread.run_sync(load_policies, path_or_policyset)
        except (PolicyError, OSError) as exc:
            self._refused_reload(exc)
            raise
        source = None if isinstance(path_or_policyset, PolicySet) else Path(path_or_policyset)
        self._swap(policy, source, publish=True)

    def _reload(self, path_or_policyset: str | Path | PolicySet, *, publish: bool) -> None:
        self._require()
        self._refuse_governed_caller("rt.reload_policies")
        try:
            policy = load_policies(path_or_policyset)
        except (PolicyError, OSError) as exc:
            self._refused_reload(exc)
            raise
        source = None if isinstance(path_or_policyset, PolicySet) else Path(path_or_policyset)
        self._swap(policy, source, publish=publish)

    def _refused_reload(self, exc: Exception) -> None:
        if not self.config.keep_last_good_policy:
            reason = f"policy reload refused: {exc}"
            self.stop_all(
                lambda: GovernanceUnavailable(reason, check="policy.reload", source="policy-reload")
            )

    def _swap(self, policy: PolicySet, source: Path | None, *, publish: bool) -> None:
        """Put ``policy`` in force: one loop step, so every decision sees one set or the other."""
        services = self._require()
        self._attestor.baseline_policy(policy.digest, policy.sources)
        gov = self._gov
        gov.policy = policy
        gov.epoch += 1
        if source is not None:
            self._policy_files = tuple(policy.sources)
            self.policy_source = source
        for run in list(self._runs.values()):
            run.span.event(EVENT_POLICY_RELOADED, policy_event(policy.digest, gov.epoch))
            run.try_record(POLICY_RELOADED, {"policy": policy.digest, "epoch": gov.epoch})
            run.tracker.budgets = policy.budgets  # live runs count against the new limits
            run.revalidate()
        services.wake_watchdog()
        if publish and self._link is not None:
            self._link.publish_policy(policy, "reload")

    def pending_approvals(self) -> list[ApprovalRequest]:
        """Steps waiting for a person (oldest first)."""
        self._require()
        return self._approvals.pending()

    def approve(self, request_id: str, *, approver: SigningKey | Mapping[str, Any]) -> None:
        """Approve a pending request with an approver's key or their signed grant.

        ``approver`` is the approver's :class:`SigningKey` (the grant is signed here, over
        the request id and its action digest) or a grant they signed elsewhere (the DSSE
        envelope :func:`sign_grant` or ``tenure approvals approve`` makes). The key must be
        declared for the request's rule in the policy, and is never the runtime's own.
        Raises ``KeyError`` (no such pending request), :class:`SignatureInvalid` (the grant
        does not hold: nothing changes), ``TypeError`` for a bare name.
        """
        self._require()
        self._refuse_governed_caller("rt.approve")
        self._approvals.submit(self._grant(request_id, approver, "granted", ""))

    def deny(
        self,
        request_id: str,
        *,
        approver: SigningKey | Mapping[str, Any],
        reason: str = "denied",
    ) -> None:
        """Deny a pending request (signed like a grant): the step raises :class:`PolicyDenied`."""
        self._require()
        self._refuse_governed_caller("rt.deny")
        self._approvals.submit(self._grant(request_id, approver, "denied", reason))

    def _grant(
        self,
        request_id: str,
        approver: SigningKey | Mapping[str, Any],
        decision: Literal["granted", "denied"],
        reason: str,
    ) -> Mapping[str, Any]:
        if isinstance(approver, SigningKey):
            request = self._approvals.request(request_id)
            return sign_grant(
                approver,
                request=request.id,
                action=request.action_digest,
                decision=decision,
                reason=reason,
            )
        if isinstance(approver, Mapping):
            return approver
        raise TypeError(
            f"approver must be the approver's SigningKey or a grant they signed, got "
            f"{type(approver).__name__} {approver!r:.40}: a name proves nothing"
        )

    def check_attestation(self) -> None:
        """Re-measure code and policy files now; a change stops every live run."""
        self._require()
        for run in list(self._runs.values()):
            change = self._attestor.remeasure(
                run.code, self._policy_files, None, self._gov.policy.digest
            )
            if change is not None:
                run.fail(change.to_error(run_id=run.id))


def load_policies(source: str | Path | PolicySet | None) -> PolicySet:
    if source is None:
        return PolicySet.default()
    if isinstance(source, PolicySet):
        return source
    return PolicySet.load(Path(source))
