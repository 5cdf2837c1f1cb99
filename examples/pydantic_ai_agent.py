"""A pydantic-ai agent, unchanged, governed by Tenure through one capability.

`support` is an ordinary pydantic-ai agent with three tools. The Tenure agent `desk` runs it
with `capabilities=[tenure_capability()]`: every tool call and every model request becomes
a governed, recorded step. The model is pydantic-ai's own offline `FunctionModel`, scripted
to look up an order, try to delete it (the policy denies it: the model is told so and
carries on), and issue a refund (held until a person approves it).

    .venv/bin/python examples/pydantic_ai_agent.py [--evidence-dir runs]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import anyio
from pydantic_ai import Agent as PydanticAgent
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    RetryPromptPart,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel

from tenure import Context, Runtime, SigningKey, agent
from tenure.adapters.pydantic_ai import tenure_capability
from tenure.crypto import default_key_dir, load_public_key
from tenure.evidence import verify_run
from tenure.policies import PolicySet

#: the approver's key: in production it lives with the person, never with the runtime
BOB = SigningKey.generate()

POLICY = f"""
version = 1
default = "deny"

[approvers]
bob = "{BOB.public_text}"

[[rules]]
id = "desk-runs"
effect = "allow"
actions = ["invoke_agent"]
targets = ["desk"]

[[rules]]
id = "lookups"
effect = "allow"
actions = ["execute_tool"]
targets = ["lookup_order"]

[[rules]]
id = "no-deletes"
effect = "deny"
actions = ["execute_tool"]
targets = ["delete_order"]

[[rules]]
id = "refunds-need-a-human"
effect = "require_approval"
actions = ["execute_tool"]
targets = ["refund"]

[[rules]]
id = "the-scripted-model"
effect = "allow"
actions = ["call_model"]
targets = ["support-model"]

[budgets]
max_tokens = 2000
"""

PLAN = [
    ("lookup_order", {"order": "A-42"}),
    ("delete_order", {"order": "A-42"}),
    ("refund", {"order": "A-42", "amount": 19}),
]


def script(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """The offline model: one planned tool call per turn, then a summary of what it saw."""
    results = [
        str(part.content)
        for m in messages
        if isinstance(m, ModelRequest)
        for part in m.parts
        if isinstance(part, ToolReturnPart | RetryPromptPart)
    ]
    if len(results) < len(PLAN):
        name, args = PLAN[len(results)]
        call = ToolCallPart(name, json.dumps(args), tool_call_id=f"call-{len(results)}")
        return ModelResponse(parts=[call], model_name="support-model")
    summary = "; ".join(results)
    return ModelResponse(parts=[TextPart(f"done: {summary}")], model_name="support-model")


support = PydanticAgent(FunctionModel(script, model_name="support-model"))


@support.tool_plain
def lookup_order(order: str) -> str:
    """Find an order."""
    return f"order {order}: 1 x headphones, 19.00, delivered"


@support.tool_plain
def delete_order(order: str) -> str:
    """Delete an order (never allowed)."""
    return f"deleted {order}"


@support.tool_plain
def refund(order: str, amount: int) -> str:
    """Refund an order."""
    return f"refunded {amount}.00 on {order}"


@agent
async def desk(ctx: Context, request: str) -> str:
    """Run the unchanged pydantic-ai agent under this step's governance."""
    result = await support.run(request, capabilities=[tenure_capability()])
    return str(result.output)


async def main(evidence_dir: Path) -> None:
    async with Runtime(policies=PolicySet.from_text(POLICY), evidence_dir=evidence_dir) as rt:
        handle = await rt.start(desk, "refund order A-42", principal="alice")
        with anyio.fail_after(30):
            while not rt.pending_approvals():  # noqa: ASYNC110 (a console polls)
                await anyio.sleep(0.01)
        (request,) = rt.pending_approvals()
        print(f"approving {request.target} (rule {request.rule_id}) as bob")
        rt.approve(request.id, approver=BOB)
        print(f"result: {await handle.result()}")
    report = verify_run(handle.evidence_path, load_public_key(default_key_dir() / "tenure.pub"))
    print(f"evidence {handle.evidence_path}: {report.verdict}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evidence-dir", type=Path, default=Path("runs"))
    anyio.run(main, parser.parse_args().evidence_dir)
