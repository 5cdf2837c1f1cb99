"""The error tree: every error Tenure raises on purpose has one root, :class:`TenureError`.

Two kinds of error (as in python-tuf and sigstore). Caller mistakes — a wrong call order, a
bad argument — raise the builtin ``TypeError`` / ``ValueError`` / ``RuntimeError``.
Untrusted input and failed governance checks raise from this tree::

    TenureError                     root: an error Tenure raised on purpose
    ├── GovernanceViolation         execution stopped or refused: authority no longer valid
    │   ├── LeaseExpired            a lease (or the run's ttl) ran out
    │   ├── LeaseRevoked            the run, or a lease it depends on, was revoked
    │   ├── PolicyDenied            a rule, the default deny, a budget or an approver said no
    │   ├── AttestationMismatch     the measured environment changed mid-run
    │   ├── SignatureInvalid        a lease, checkpoint or envelope signature did not verify
    │   └── GovernanceUnavailable   watchdog, event loop, ledger, key or policy source failed
    ├── PolicyError  (ValueError)   a policy file or set cannot be loaded (tenure.policies)
    ├── EvidenceError (ValueError)  evidence cannot be read as Tenure evidence: ledger
    │                               records, signed notes, Merkle proofs (tenure.evidence)
    └── UsageError                  a command line that cannot be run as given (exit code 2)

Every violation says where it came from: the run, the lease, the check (or policy rule)
that failed, the task it hit and a message a person can act on. The message is rendered
when it is asked for, so a violation raised before its run id is known names the run once
the run has claimed it.
"""

from __future__ import annotations

__all__ = [
    "AttestationMismatch",
    "EvidenceError",
    "GovernanceUnavailable",
    "GovernanceViolation",
    "LeaseExpired",
    "LeaseRevoked",
    "PolicyDenied",
    "SignatureInvalid",
    "TenureError",
    "UsageError",
]


class TenureError(Exception):
    """Root of every error Tenure raises on purpose (see the module docstring)."""


class GovernanceViolation(TenureError):
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
        # ``args`` holds only the reason, so pickling (process isolation, copies of
        # exception groups) rebuilds with ``cls(reason)`` and then restores ``__dict__``.
        super().__init__(reason)
        self.reason = reason
        self.run_id = run_id
        self.lease_id = lease_id
        self.check = check
        self.task = task
        self.source = source

    def __str__(self) -> str:
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


class LeaseExpired(GovernanceViolation):
    """A lease (or the run's ttl) ran out before the task finished."""


class LeaseRevoked(GovernanceViolation):
    """The run, or a lease it depends on, was revoked."""


class PolicyDenied(GovernanceViolation):
    """A policy rule, the default deny, a budget, a rate limit or an approver said no."""


class AttestationMismatch(GovernanceViolation):
    """The measured environment (code, policy file, dependencies) changed mid-run."""


class SignatureInvalid(GovernanceViolation):
    """A lease, checkpoint or envelope signature did not verify under a trusted key."""


class GovernanceUnavailable(GovernanceViolation):
    """A governance dependency failed: watchdog, event loop, ledger, key or policy source."""


class EvidenceError(TenureError, ValueError):
    """Evidence that cannot be read or checked as Tenure evidence (what and where)."""


class UsageError(TenureError):
    """A command line that cannot be run as given: one line saying why (exit code 2)."""
