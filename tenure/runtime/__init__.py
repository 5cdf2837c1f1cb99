"""The engine: governed tasks, leases, watchdog, evidence, lineage and the CLI."""

from ._approvals import ApprovalRequest
from ._config import RuntimeConfig
from ._errors import (
    AttestationMismatch,
    GovernanceUnavailable,
    GovernanceViolation,
    LeaseExpired,
    LeaseRevoked,
    PolicyDenied,
    SignatureInvalid,
)
from ._keys import SigningKey
from ._lease import Lease
from ._revocations import FolderRevocations, RevocationRequest, RevocationSource
from ._runtime import RunHandle, Runtime

__all__ = [
    "ApprovalRequest",
    "AttestationMismatch",
    "FolderRevocations",
    "GovernanceUnavailable",
    "GovernanceViolation",
    "Lease",
    "LeaseExpired",
    "LeaseRevoked",
    "PolicyDenied",
    "RevocationRequest",
    "RevocationSource",
    "RunHandle",
    "Runtime",
    "RuntimeConfig",
    "SignatureInvalid",
    "SigningKey",
]
