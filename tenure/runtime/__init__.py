"""The engine: governed tasks, leases, watchdog, evidence, lineage and the CLI."""

from .._errors import (
    AttestationMismatch,
    GovernanceUnavailable,
    GovernanceViolation,
    LeaseExpired,
    LeaseRevoked,
    PolicyDenied,
    SignatureInvalid,
)
from ..crypto._keys import SigningKey
from ._config import RuntimeConfig
from ._runtime import RunHandle, Runtime
from .kernel._lease import Lease
from .services._approvals import ApprovalRequest
from .services._revocations import FolderRevocations, RevocationRequest, RevocationSource

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
