"""Telemetry names, declared once: operations, attributes, events, the schema URL.

Span and attribute names follow the OpenTelemetry GenAI semantic conventions (now in
``open-telemetry/semantic-conventions-genai``; schema :data:`SCHEMA_URL`): ``invoke_workflow``
/ ``invoke_agent`` / ``execute_tool`` spans with ``gen_ai.*`` attributes, ``error.type`` on
failure. Everything Tenure adds lives under ``tenure.*`` — span attributes *and* the
attributes of span events (``tenure.lease.id``, never a bare ``lease``).

The ``*_event`` helpers build each event's attributes, so call sites cannot drift from the
names declared here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from opentelemetry.util.types import AttributeValue

INSTRUMENTATION_NAME: Final = "tenure"
#: The GenAI conventions' schema this instrumentation follows.
SCHEMA_URL: Final = "https://opentelemetry.io/schemas/gen-ai/1.42.0"
#: ``gen_ai.provider.name`` of Tenure's own in-process agents (the conventions require one).
PROVIDER_NAME: Final = "tenure"

OP_INVOKE_WORKFLOW: Final = "invoke_workflow"
OP_INVOKE_AGENT: Final = "invoke_agent"
OP_EXECUTE_TOOL: Final = "execute_tool"
OP_CHAT: Final = "chat"

ATTR_OPERATION_NAME: Final = "gen_ai.operation.name"
ATTR_PROVIDER_NAME: Final = "gen_ai.provider.name"
ATTR_WORKFLOW_NAME: Final = "gen_ai.workflow.name"
ATTR_AGENT_NAME: Final = "gen_ai.agent.name"
ATTR_AGENT_ID: Final = "gen_ai.agent.id"
ATTR_TOOL_NAME: Final = "gen_ai.tool.name"
ATTR_TOOL_CALL_ID: Final = "gen_ai.tool.call.id"
ATTR_TOOL_TYPE: Final = "gen_ai.tool.type"
ATTR_ERROR_TYPE: Final = "error.type"
ATTR_REQUEST_MODEL: Final = "gen_ai.request.model"
ATTR_RESPONSE_MODEL: Final = "gen_ai.response.model"
ATTR_USAGE_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
ATTR_USAGE_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"

ATTR_RUN_ID: Final = "tenure.run.id"
ATTR_STEP_ID: Final = "tenure.step.id"
ATTR_LEASE_ID: Final = "tenure.lease.id"
ATTR_LEASE_GENERATION: Final = "tenure.lease.generation"
ATTR_PRINCIPAL: Final = "tenure.principal"
ATTR_TARGET: Final = "tenure.target"
ATTR_DECISION: Final = "tenure.decision"
ATTR_RULE_ID: Final = "tenure.rule.id"
ATTR_POLICY_DIGEST: Final = "tenure.policy.digest"
ATTR_POLICY_EPOCH: Final = "tenure.policy.epoch"
ATTR_ATTESTATION_DIGEST: Final = "tenure.attestation.digest"
ATTR_LEDGER_INDEX: Final = "tenure.ledger.index"
ATTR_CHECK: Final = "tenure.check"
ATTR_FRAMEWORK: Final = "tenure.framework"
ATTR_REASON: Final = "tenure.reason"
ATTR_SOURCE: Final = "tenure.source"
ATTR_TASK: Final = "tenure.task"
ATTR_APPROVAL_REQUEST: Final = "tenure.approval.request"
ATTR_APPROVAL_STATE: Final = "tenure.approval.state"
ATTR_APPROVER: Final = "tenure.approval.approver"

TOOL_TYPE_FUNCTION: Final = "function"

EVENT_LEASE_ISSUED: Final = "tenure.lease.issued"
EVENT_LEASE_RENEWED: Final = "tenure.lease.renewed"
EVENT_LEASE_REVOKED: Final = "tenure.lease.revoked"
EVENT_DECISION: Final = "tenure.decision"
EVENT_APPROVAL: Final = "tenure.approval"
EVENT_VIOLATION: Final = "tenure.violation"
EVENT_POLICY_RELOADED: Final = "tenure.policy.reloaded"

Attributes = dict[str, AttributeValue]


def error_type(error: BaseException | type[BaseException]) -> str:
    """``error.type``: the fully qualified class name (``tenure.LeaseRevoked``,
    ``builtins`` omitted: ``ValueError``). Tenure's errors are named where users import
    them, the package root, not the private module that defines them."""
    cls = error if isinstance(error, type) else type(error)
    module = cls.__module__
    if module == "builtins":
        return cls.__qualname__
    if module == "tenure" or module.startswith("tenure."):
        return f"tenure.{cls.__qualname__}"
    return f"{module}.{cls.__qualname__}"


def lease_event(lease_id: str, *, generation: int | None = None, reason: str = "") -> Attributes:
    """Attributes of the lease issued / renewed / revoked events."""
    attrs: Attributes = {ATTR_LEASE_ID: lease_id}
    if generation is not None:
        attrs[ATTR_LEASE_GENERATION] = generation
    if reason:
        attrs[ATTR_REASON] = reason
    return attrs


def decision_event(target: str, effect: str, rule: str) -> Attributes:
    """Attributes of the decision event (on the caller's span)."""
    return {ATTR_TARGET: target, ATTR_DECISION: effect, ATTR_RULE_ID: rule}


def approval_event(request: str, state: str, approver: str = "") -> Attributes:
    """Attributes of the approval event (requested / granted / denied)."""
    attrs: Attributes = {ATTR_APPROVAL_REQUEST: request, ATTR_APPROVAL_STATE: state}
    if approver:
        attrs[ATTR_APPROVER] = approver
    return attrs


def violation_event(error: BaseException, stop: Mapping[str, str]) -> Attributes:
    """Attributes of the violation event, from the stop's ledger fields."""
    attrs: Attributes = {
        ATTR_ERROR_TYPE: error_type(error),
        ATTR_CHECK: stop.get("check", ""),
        ATTR_REASON: stop.get("reason", ""),
        ATTR_SOURCE: stop.get("source", ""),
    }
    if stop.get("lease"):
        attrs[ATTR_LEASE_ID] = stop["lease"]
    if stop.get("task"):
        attrs[ATTR_TASK] = stop["task"]
    return attrs


def policy_event(digest: str, epoch: int) -> Attributes:
    """Attributes of the policy-reloaded event."""
    return {ATTR_POLICY_DIGEST: digest, ATTR_POLICY_EPOCH: epoch}
