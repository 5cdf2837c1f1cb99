"""pydantic-ai under Tenure, driven by pydantic-ai's own offline ``FunctionModel``.

The agent is built without any Tenure code; the capability is added per run. The scripted
model asks for one tool call, then answers with what the tool returned (so a test sees
exactly what the model was shown).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest
from pydantic_ai import Agent as PydanticAgent
from pydantic_ai.capabilities import Instrumentation
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
from pydantic_ai.models.instrumented import InstrumentationSettings
from pydantic_ai.usage import RequestUsage

from tenure import Context, LeaseRevoked, PolicyDenied, SigningKey, agent
from tenure.adapters.pydantic_ai import tenure_capability

from ..support.approver import APPROVER, next_request
from ._shared import recording, records, runtime, verified


class Script:
    """A FunctionModel script: call ``tool`` with ``args`` ``rounds`` times, then report what
    came back. Each response reports ``usage`` input and ``usage // 2`` output tokens."""

    def __init__(self, tool: str, args: dict[str, Any], usage: int = 10, rounds: int = 1) -> None:
        self.tool = tool
        self.args = args
        self.usage = usage
        self.rounds = rounds
        self.requests = 0
        self.seen: list[str] = []

    def __call__(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        self.requests += 1
        usage = RequestUsage(input_tokens=self.usage, output_tokens=self.usage // 2)
        last = messages[-1]
        returned = [
            p
            for p in (last.parts if isinstance(last, ModelRequest) else [])
            if isinstance(p, ToolReturnPart | RetryPromptPart)
        ]
        if not returned or self.requests <= self.rounds:
            call_id = f"call-{self.tool}" + (f"-{self.requests}" if self.rounds > 1 else "")
            call = ToolCallPart(self.tool, json.dumps(self.args), tool_call_id=call_id)
            return ModelResponse(parts=[call], usage=usage, model_name="scripted")
        text = " | ".join(str(p.content) for p in returned)
        self.seen.append(text)
        return ModelResponse(
            parts=[TextPart(f"model saw: {text}")], usage=usage, model_name="scripted"
        )


def build(script: Script, side_effects: list[str], slow_started: anyio.Event | None = None) -> Any:
    """An ordinary pydantic-ai agent with four tools: nothing Tenure in it."""
    support = PydanticAgent(FunctionModel(script, model_name="scripted"))

    @support.tool_plain
    def read_file(path: str) -> str:
        side_effects.append(f"read:{path}")
        return f"contents of {path}"

    @support.tool_plain
    def delete_file(path: str) -> str:
        side_effects.append(f"deleted:{path}")
        return "deleted"

    @support.tool_plain
    def pay(amount: int) -> str:
        side_effects.append(f"paid:{amount}")
        return f"paid {amount}"

    @support.tool_plain
    async def slow() -> str:
        assert slow_started is not None
        slow_started.set()
        try:
            await anyio.sleep(30)
        except anyio.get_cancelled_exc_class():
            side_effects.append("slow:cancelled")
            raise
        side_effects.append("slow:finished")
        return "slow done"

    return support


def host_agent(support: Any, settings: dict[str, Any] | None = None) -> Any:
    @agent
    async def host(ctx: Context, prompt: str) -> str:
        result = await support.run(
            prompt, capabilities=[tenure_capability()], model_settings=settings
        )
        return str(result.output)

    return host


async def test_an_allowed_tool_runs_and_tool_and_model_calls_are_in_the_evidence(
    evidence: Path, key: SigningKey
) -> None:
    effects: list[str] = []
    script = Script("read_file", {"path": "notes.txt"})
    async with runtime(evidence, key) as rt:
        handle = await rt.start(host_agent(build(script, effects)), "go", principal="alice")
        assert await handle.result() == "model saw: contents of notes.txt"
    assert effects == ["read:notes.txt"]
    recs = records(handle.evidence_path)
    tool = next(r for r in recs if r["kind"] == "step.start" and r["target"] == "read_file")
    assert (tool["framework"], tool["call"]) == ("pydantic-ai", "call-read_file")
    models = [r for r in recs if r["kind"] == "step.start" and r["action"] == "call_model"]
    usage = [r for r in recs if r["kind"] == "usage"]
    assert len(models) == 2 and [u["model"] for u in usage] == ["scripted", "scripted"]
    assert [(u["input_tokens"], u["output_tokens"]) for u in usage] == [(10, 5), (10, 5)]
    verified(handle.evidence_path, key)


async def test_a_denied_tool_never_runs_and_the_model_sees_the_rule(
    evidence: Path, key: SigningKey
) -> None:
    effects: list[str] = []
    script = Script("delete_file", {"path": "/"})
    async with runtime(evidence, key) as rt:
        handle = await rt.start(host_agent(build(script, effects)), "go", principal="alice")
        output = await handle.result()
    assert effects == []
    assert "Denied by Tenure (no-delete)" in script.seen[0]
    assert "delete_file was not run" in output
    recs = records(handle.evidence_path)
    assert not [r for r in recs if r["kind"] == "step.start" and r["target"] == "delete_file"]
    verified(handle.evidence_path, key)


async def test_an_approval_held_tool_waits_for_tenure_approval_then_runs(
    evidence: Path, key: SigningKey
) -> None:
    effects: list[str] = []
    script = Script("pay", {"amount": 12})
    async with runtime(evidence, key) as rt:
        handle = await rt.start(host_agent(build(script, effects)), "go", principal="alice")
        request = await next_request(rt)
        assert (request.target, request.rule_id) == ("pay", "pay-needs-a-human")
        assert effects == []
        rt.approve(request.id, approver=APPROVER)
        assert await handle.result() == "model saw: paid 12"
    assert effects == ["paid:12"]
    verified(handle.evidence_path, key)


async def test_revoking_mid_tool_cancels_the_tool_and_the_run_ends_with_the_violation(
    evidence: Path, key: SigningKey
) -> None:
    effects: list[str] = []
    started = anyio.Event()
    script = Script("slow", {})
    async with runtime(evidence, key) as rt:
        handle = await rt.start(host_agent(build(script, effects, started)), "go", principal="a")
        with anyio.fail_after(10):
            await started.wait()
        rt.revoke(handle.run_id, reason="pull the plug")
        with pytest.raises(LeaseRevoked):
            await handle.result()
    assert effects == ["slow:cancelled"]
    assert script.seen == []  # the model never got a result of the revoked call
    recs = records(handle.evidence_path)
    assert next(r for r in recs if r["kind"] == "run.end")["status"] == "violation"
    slow = next(r for r in recs if r["kind"] == "step.start" and r["target"] == "slow")
    assert any(slow["step"] in r["steps"] for r in recs if r["kind"] == "steps.stopped")
    verified(handle.evidence_path, key)


async def test_the_token_budget_stops_the_run_before_the_model_call_that_would_exceed_it(
    evidence: Path, key: SigningKey
) -> None:
    effects: list[str] = []
    script = Script("read_file", {"path": "a"}, usage=30, rounds=5)  # 45 tokens a request
    async with runtime(evidence, key) as rt:
        # each request may answer with up to 15 tokens (the request's own output limit)
        host = host_agent(build(script, effects), {"max_tokens": 15})
        handle = await rt.start(host, "go", principal="alice")
        with pytest.raises(PolicyDenied) as stopped:
            await handle.result()
    assert stopped.value.check == "budget.max_tokens"
    # two requests used 90 of 100; a third may use 15 more: it is refused before it is sent
    assert script.requests == 2
    assert "used 90 + up to 15 requested" in stopped.value.reason
    assert "the call to scripted was not sent" in stopped.value.reason
    recs = records(handle.evidence_path)
    assert sum(r["tokens"] for r in recs if r["kind"] == "usage") == 90
    verified(handle.evidence_path, key)


async def test_a_denied_model_name_never_reaches_the_model(evidence: Path, key: SigningKey) -> None:
    effects: list[str] = []
    script = Script("read_file", {"path": "a"})
    support = build(script, effects)
    support_model = FunctionModel(script, model_name="gpt-5-pro")

    @agent
    async def host(ctx: Context) -> str:
        result = await support.run("go", model=support_model, capabilities=[tenure_capability()])
        return str(result.output)

    async with runtime(evidence, key) as rt:
        with pytest.raises(PolicyDenied) as denied:
            await rt.run(host, principal="alice")
    assert denied.value.check == "rule:default-deny" and "gpt-5-pro" in denied.value.reason
    assert script.requests == 0 and effects == []


async def test_tenure_spans_nest_under_pydantic_ai_spans_in_one_trace(
    evidence: Path, key: SigningKey
) -> None:
    provider, exporter = recording()
    effects: list[str] = []
    support = build(Script("read_file", {"path": "t"}), effects)
    instrumented = Instrumentation(settings=InstrumentationSettings(tracer_provider=provider))

    @agent
    async def host(ctx: Context) -> str:
        result = await support.run("go", capabilities=[instrumented, tenure_capability()])
        return str(result.output)

    async with runtime(evidence, key, tracer_provider=provider) as rt:
        await rt.run(host, principal="alice")
    spans = exporter.get_finished_spans()
    by_id = {s.context.span_id: s for s in spans}

    def ancestors(span: Any) -> list[str]:
        out = []
        while span.parent is not None and span.parent.span_id in by_id:
            span = by_id[span.parent.span_id]
            out.append(f"{_scope(span)}:{span.name}")
        return out

    ours = next(s for s in spans if s.name == "execute_tool read_file" and _scope(s) == "tenure")
    chain = ancestors(ours)
    assert chain[0] == "pydantic-ai:execute_tool read_file"  # nested in the framework's span
    assert "tenure:invoke_agent host" in chain and chain[-1].startswith("tenure:invoke_workflow")
    assert any(x.startswith("pydantic-ai:invoke_agent") for x in chain)
    assert len({s.context.trace_id for s in spans}) == 1


def _scope(span: Any) -> str:
    return span.instrumentation_scope.name if span.instrumentation_scope else ""
