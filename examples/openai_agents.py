"""An OpenAI Agents SDK agent governed by Tenure: `Runner.run(govern_agent(triage), ...)`.

`triage` is an ordinary SDK agent with two function tools. `govern_agent` clones it with
both tools and its model governed (the original is untouched). The model is the SDK's own
offline `agents.testing.ScriptedModel`: it checks a ticket, then tries to close every
ticket at once; Tenure allows the first and denies the second, and the model is handed the
denial as the tool's output. The SDK's own tracing (which exports to OpenAI) is off.

    .venv/bin/python examples/openai_agents.py [--evidence-dir runs]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import anyio
from agents import Agent, Runner, function_tool, set_tracing_disabled
from agents.testing import ScriptedModel, assistant_message, function_call
from agents.usage import Usage

from tenure import Context, Runtime, agent
from tenure.adapters.openai_agents import govern_agent
from tenure.crypto import default_key_dir, load_public_key
from tenure.evidence import verify_run
from tenure.policies import PolicySet

POLICY = """
version = 1
default = "deny"

[[rules]]
id = "helpdesk-runs"
effect = "allow"
actions = ["invoke_agent"]
targets = ["helpdesk"]

[[rules]]
id = "read-tickets"
effect = "allow"
actions = ["execute_tool"]
targets = ["get_ticket"]

[[rules]]
id = "no-bulk-close"
effect = "deny"
actions = ["execute_tool"]
targets = ["close_all_tickets"]

[[rules]]
id = "the-scripted-model"
effect = "allow"
actions = ["call_model"]
targets = ["triage-model"]
"""


@function_tool
def get_ticket(ticket: str) -> str:
    """Read a ticket."""
    return f"{ticket}: printer on floor 3 is out of toner"


@function_tool
def close_all_tickets() -> str:
    """Close every open ticket."""
    return "closed 412 tickets"


model = ScriptedModel(
    [
        [function_call("get_ticket", {"ticket": "T-7"}, call_id="call_1")],
        [function_call("close_all_tickets", {}, call_id="call_2")],
        [assistant_message("T-7 needs toner; bulk close was refused by policy.")],
    ],
    default_usage=Usage(requests=1, input_tokens=40, output_tokens=12, total_tokens=52),
)
triage = Agent(name="triage", model=model, tools=[get_ticket, close_all_tickets])


@agent
async def helpdesk(ctx: Context, request: str) -> str:
    """Run the SDK agent with its tools and model governed under this step."""
    result = await Runner.run(govern_agent(triage, model_name="triage-model"), request)
    return str(result.final_output)


async def main(evidence_dir: Path) -> None:
    set_tracing_disabled(True)  # offline: the SDK's own tracing exports to OpenAI
    async with Runtime(policies=PolicySet.from_text(POLICY), evidence_dir=evidence_dir) as rt:
        handle = await rt.start(helpdesk, "clean up the queue", principal="alice")
        print(f"result: {await handle.result()}")
    for item in model.calls[2].input:
        if isinstance(item, dict) and item.get("type") == "function_call_output":
            print(f"the model was told: {item['output']}")
    report = verify_run(handle.evidence_path, load_public_key(default_key_dir() / "tenure.pub"))
    print(f"evidence {handle.evidence_path}: {report.verdict}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evidence-dir", type=Path, default=Path("runs"))
    anyio.run(main, parser.parse_args().evidence_dir)
