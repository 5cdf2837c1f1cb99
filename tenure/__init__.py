"""Tenure: a governed asyncio runtime for AI agents.

Agents are plain async functions; every agent step and tool call runs under a signed,
short-lived lease that is re-checked before every resumption; when authority lapses the
whole run stops, fail closed, and the stop is recorded in verifiable evidence.
"""

from ._errors import TenureError
from ._version import __version__ as __version__
from .agents import (
    Agent,
    Context,
    ModelCall,
    Parallel,
    ParallelTask,
    Tool,
    agent,
    current_context,
    tool,
)
from .runtime import (
    ApprovalRequest,
    AttestationMismatch,
    GovernanceUnavailable,
    GovernanceViolation,
    Lease,
    LeaseExpired,
    LeaseRevoked,
    PolicyDenied,
    RunHandle,
    Runtime,
    RuntimeConfig,
    SignatureInvalid,
    SigningKey,
)

__all__ = [
    "Agent",
    "ApprovalRequest",
    "AttestationMismatch",
    "Context",
    "GovernanceUnavailable",
    "GovernanceViolation",
    "Lease",
    "LeaseExpired",
    "LeaseRevoked",
    "ModelCall",
    "Parallel",
    "ParallelTask",
    "PolicyDenied",
    "RunHandle",
    "Runtime",
    "RuntimeConfig",
    "SignatureInvalid",
    "SigningKey",
    "TenureError",
    "Tool",
    "agent",
    "current_context",
    "tool",
]
