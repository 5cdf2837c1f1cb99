"""The OpenAI Agents SDK under Tenure, driven by the SDK's own ``agents.testing.ScriptedModel``.

The SDK's own tracing (not OpenTelemetry, exported to OpenAI by default) is switched off:
tests reach no network.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from agents import Agent as SdkAgent
from agents import Runner, WebSearchTool, function_tool, set_tracing_disabled
from agents.testing import ScriptedModel, assistant_message, function_call
from agents.usage import Usage

from tenure import Context, LeaseRevoked, PolicyDenied, SigningKey, agent
from tenure.adapters.openai_agents import govern_agent
from tenure.evidence import verify_run

from ..support.approver import APPROVER, next_request
from ._shared import records, runtime


@pytest.fixture(autouse=True)
def _no_sdk_tracing() -> Iterator[None]:
    set_tracing_disabled(True)
    yield


class Effects:
    def __init__(self) -> None:
        self.log: list[str] = []
        self.slow_started = anyio.Event()


def sdk_agent(fx: Effects, *calls: Any) -> tuple[SdkAgent[Any], ScriptedModel]:
    """An ordinary SDK agent on a scripted model: nothing Tenure in it."""

    @function_tool
    def read_file(path: str) -> str:
        """Read a file."""
        fx.log.append(f"read:{path}")
        return f"contents of {path}"

    @function_tool
    def delete_file(path: str) -> str:
        """Delete a file."""
        fx.log.append(f"deleted:{path}")
        return "deleted"

    @function_tool
    def pay(amount: int) -> str:
        """Pay."""
        fx.log.append(f"paid:{amount}")
        return f"paid {amount}"

    @function_tool
    async def slow() -> str:
        """Wait a long time."""
        fx.slow_started.set()
        try:
            await anyio.sleep(30)
        except anyio.get_cancelled_exc_class():
            fx.log.append("slow:cancelled")
            raise
        return "late"

    model = ScriptedModel(
        [list(calls), [assistant_message("done")]],
        default_usage=Usage(requests=1, input_tokens=13, output_tokens=3, total_tokens=16),
    )
    tools: list[Any] = [read_file, delete_file, pay, slow]
    return SdkAgent(name="clerk", model=model, tools=tools), model


def host(sdk: SdkAgent[Any]) -> Any:
    @agent
    async def run_it(ctx: Context) -> str:
        result = await Runner.run(govern_agent(sdk, model_name="scripted-sdk-model"), "go")
        return str(result.final_output)

    return run_it


def _tool_outputs(model: ScriptedModel) -> list[str]:
    """What the model was sent back as tool outputs in its second request."""
    second = model.calls[1].input
    return [str(i["output"]) for i in second if i.get("type") == "function_call_output"]


async def test_an_allowed_tool_runs_and_tool_and_model_calls_are_in_the_evidence(
    evidence: Path, key: SigningKey
) -> None:
    fx = Effects()
    sdk, model = sdk_agent(fx, function_call("read_file", {"path": "n"}, call_id="call_1"))
    async with runtime(evidence, key) as rt:
        handle = await rt.start(host(sdk), principal="alice")
        assert await handle.result() == "done"
    assert fx.log == ["read:n"] and _tool_outputs(model) == ["contents of n"]
    recs = records(handle.evidence_path)
    tool = next(r for r in recs if r["kind"] == "step.start" and r["target"] == "read_file")
    assert (tool["framework"], tool["call"]) == ("openai-agents", "call_1")
    usage = [r for r in recs if r["kind"] == "usage"]
    assert [(u["model"], u["input_tokens"], u["output_tokens"]) for u in usage] == [
        ("scripted-sdk-model", 13, 3),
        ("scripted-sdk-model", 13, 3),
    ]
    assert sdk.tools[0] is not govern_agent(sdk).tools[0]  # the original agent is untouched
    report = verify_run(handle.evidence_path, key.public_key)
    assert report.ok, report.failures


async def test_a_denied_tool_never_runs_and_the_model_receives_the_denial(
    evidence: Path, key: SigningKey
) -> None:
    fx = Effects()
    sdk, model = sdk_agent(fx, function_call("delete_file", {"path": "/"}, call_id="call_d"))
    async with runtime(evidence, key) as rt:
        handle = await rt.start(host(sdk), principal="alice")
        await handle.result()
    assert fx.log == []
    (output,) = _tool_outputs(model)
    assert "Denied by Tenure (no-delete)" in output and "delete_file was not run" in output
    assert verify_run(handle.evidence_path, key.public_key).ok


async def test_an_approval_held_tool_waits_for_tenure_approval(
    evidence: Path, key: SigningKey
) -> None:
    fx = Effects()
    sdk, model = sdk_agent(fx, function_call("pay", {"amount": 3}, call_id="call_p"))
    async with runtime(evidence, key) as rt:
        handle = await rt.start(host(sdk), principal="alice")
        request = await next_request(rt)
        assert request.target == "pay" and fx.log == []
        rt.approve(request.id, approver=APPROVER)
        assert await handle.result() == "done"
    assert fx.log == ["paid:3"] and _tool_outputs(model) == ["paid 3"]


async def test_revoking_mid_tool_cancels_it_and_the_run_ends_with_the_violation(
    evidence: Path, key: SigningKey
) -> None:
    fx = Effects()
    sdk, model = sdk_agent(fx, function_call("slow", {}, call_id="call_s"))
    async with runtime(evidence, key) as rt:
        handle = await rt.start(host(sdk), principal="alice")
        with anyio.fail_after(10):
            await fx.slow_started.wait()
        rt.revoke(handle.run_id, reason="stop")
        with pytest.raises(LeaseRevoked):
            await handle.result()
    assert fx.log == ["slow:cancelled"]
    assert len(model.calls) == 1  # the model never got the revoked call's output
    recs = records(handle.evidence_path)
    assert next(r for r in recs if r["kind"] == "run.end")["status"] == "violation"
    assert verify_run(handle.evidence_path, key.public_key).ok


async def test_a_denied_model_name_never_reaches_the_model(evidence: Path, key: SigningKey) -> None:
    fx = Effects()
    sdk, model = sdk_agent(fx, function_call("read_file", {"path": "n"}, call_id="c"))

    @agent
    async def run_it(ctx: Context) -> str:
        result = await Runner.run(govern_agent(sdk, model_name="gpt-5-pro"), "go")
        return str(result.final_output)

    async with runtime(evidence, key) as rt:
        with pytest.raises(PolicyDenied) as denied:
            await rt.run(run_it, principal="alice")
    assert "gpt-5-pro" in denied.value.reason
    assert model.calls == () and fx.log == []


def test_hosted_tools_and_mcp_servers_are_refused_unless_named_unsafe() -> None:
    fx = Effects()
    sdk, _ = sdk_agent(fx)
    hosted = sdk.clone(tools=[*sdk.tools, WebSearchTool()])
    with pytest.raises(TypeError, match="cannot be governed here"):
        govern_agent(hosted)
    with pytest.warns(UserWarning, match="runs UNGOVERNED"):
        governed = govern_agent(hosted, unsafe_ungoverned=["web_search"])
    assert isinstance(governed.tools[-1], WebSearchTool)


async def test_a_streamed_run_is_governed_and_its_usage_recorded(
    evidence: Path, key: SigningKey
) -> None:
    fx = Effects()
    sdk, _ = sdk_agent(fx, function_call("read_file", {"path": "s"}, call_id="call_s1"))

    @agent
    async def run_it(ctx: Context) -> str:
        streamed = Runner.run_streamed(govern_agent(sdk, model_name="scripted-sdk-model"), "go")
        async for _ in streamed.stream_events():
            pass
        return str(streamed.final_output)

    async with runtime(evidence, key) as rt:
        handle = await rt.start(run_it, principal="alice")
        assert await handle.result() == "done"
    assert fx.log == ["read:s"]
    recs = records(handle.evidence_path)
    assert len([r for r in recs if r["kind"] == "step.start" and r["action"] == "call_model"]) == 2


def test_a_named_model_is_resolved_and_arguments_that_are_not_json_still_decided() -> None:
    from tenure.adapters.openai_agents import GovernedModel

    fx = Effects()
    sdk, _ = sdk_agent(fx)
    named = govern_agent(sdk.clone(model="gpt-4.1-mini"))
    assert isinstance(named.model, GovernedModel) and named.model.name == "gpt-4.1-mini"
    again = govern_agent(named)
    assert again.model is named.model  # not wrapped twice
    unnamed = govern_agent(sdk)
    assert isinstance(unnamed.model, GovernedModel) and unnamed.model.name == "ScriptedModel"
