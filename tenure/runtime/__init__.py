"""The engine: runs, the governed step, leases, the watchdog and the services around them."""

from .._errors import (
    AttestationMismatch,
    GovernanceUnavailable,
    GovernanceViolation,
    LeaseExpired,
    LeaseRevoked,
    PolicyDenied,
    SignatureInvalid,
    TenureError,
)
from ..crypto import SigningKey
from ._config import RuntimeConfig
from ._runtime import RunHandle, Runtime
from .kernel._lease import Lease
from .services._approval_request import ApprovalRequest
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
    "TenureError",
]
