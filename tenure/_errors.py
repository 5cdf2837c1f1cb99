"""The exception tree for governance failures.

Two kinds of error (as in python-tuf and sigstore): caller mistakes raise ``TypeError`` /
``ValueError`` / ``RuntimeError``; a failed governance check raises a subclass of
:class:`GovernanceViolation`. Every violation says where it came from: the run, the lease,
the check (or policy rule) that failed, the task it hit and a message a person can act on.
"""

from __future__ import annotations

__all__ = [
    "AttestationMismatch",
    "GovernanceUnavailable",
    "GovernanceViolation",
    "LeaseExpired",
    "LeaseRevoked",
    "PolicyDenied",
    "SignatureInvalid",
]


class GovernanceViolation(Exception):
    """Base class: execution was stopped because its authority is no longer valid.

    Attributes:
        run_id: the run that was stopped (``None`` when raised outside a run).
        lease_id: the lease whose check failed (``None`` if no lease was involved).
        check: the name of the check or policy rule that failed, e.g. ``"lease.expiry"``
            or ``"rule:deny-payments"``.
        task: the governed task (``"agent:planner"``, ``"tool:search"``) it hit, if any.
        source: who stopped the run (``"watchdog"``, ``"revoke"``, ``"gate"``, ...).
        reason: the human-readable cause, without the identifying prefix.
    """

    #: the ledger / JSON name of this violation class
    kind = "violation"

    def __init__(
        self,
        reason: str,
        *,
        run_id: str | None = None,
        lease_id: str | None = None,
        check: str = "unknown",
        task: str | None = None,
        source: str = "runtime",
    ) -> None:
        self.reason = reason
        self.run_id = run_id
        self.lease_id = lease_id
        self.check = check
        self.task = task
        self.source = source
        super().__init__(self._render())

    def _render(self) -> str:
        where = [f"check={self.check}"]
        if self.run_id:
            where.append(f"run={self.run_id}")
        if self.lease_id:
            where.append(f"lease={self.lease_id}")
        if self.task:
            where.append(f"task={self.task}")
        where.append(f"source={self.source}")
        return f"{self.reason} ({', '.join(where)})"

    def to_record(self) -> dict[str, str]:
        """The fields the evidence ledger records for this stop."""
        return {
            "error": type(self).__name__,
            "check": self.check,
            "reason": self.reason,
            "lease": self.lease_id or "",
            "task": self.task or "",
            "source": self.source,
        }

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only state must survive pickling (process isolation, ExceptionGroup copies).
        return (_rebuild, (type(self), self.reason, self.__dict__.copy()))


def _rebuild(cls: type[GovernanceViolation], reason: str, state: dict[str, object]) -> object:
    exc = cls.__new__(cls)
    Exception.__init__(exc, reason)
    exc.__dict__.update(state)
    exc.args = (exc._render(),)
    return exc


class LeaseExpired(GovernanceViolation):
    """A lease (or the run's ttl) ran out before the task finished."""

    kind = "lease_expired"


class LeaseRevoked(GovernanceViolation):
    """The run, or a lease it depends on, was revoked."""

    kind = "lease_revoked"


class PolicyDenied(GovernanceViolation):
    """A policy rule, the default deny, a budget, a rate limit or an approver said no."""

    kind = "policy_denied"


class AttestationMismatch(GovernanceViolation):
    """The measured environment (code, policy file, dependencies) changed mid-run."""

    kind = "attestation_mismatch"


class SignatureInvalid(GovernanceViolation):
    """A lease, checkpoint or envelope signature did not verify under a trusted key."""

    kind = "signature_invalid"


class GovernanceUnavailable(GovernanceViolation):
    """A governance dependency failed: watchdog, event loop, ledger, key or policy source."""

    kind = "governance_unavailable"
