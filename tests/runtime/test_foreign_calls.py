"""The seam for code Tenure did not write: ``ctx.govern`` / ``govern_sync`` / ``model_call``.

A foreign call is decided and recorded before its body runs, runs inside a scope the run's
stop cancels (even from a task outside the run's scope), has its outcome recorded however
it ends, and is one logical call per call id. Model calls are governed by model name and
their usage feeds the budgets before the next call is sent.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import Any

import anyio
import pytest

from tenure import (
    Context,
    LeaseRevoked,
    PolicyDenied,
    Runtime,
    SigningKey,
    agent,
    current_context,
    tool,
)
from tenure.evidence import verify_run
from tenure.policies import PolicySet
from tests.support.evidence import decisions

from ..support.approver import APPROVER, next_request, with_approver

POLICY = """
version = 1
default = "deny"

[[rules]]
id = "agents"
effect = "allow"
actions = ["invoke_agent"]

[[rules]]
id = "reads"
effect = "allow"
actions = ["execute_tool"]
targets = ["read_*", "slow"]

[[rules]]
id = "no-delete"
effect = "deny"
actions = ["execute_tool"]
targets = ["delete_*"]

[[rules]]
id = "pay-needs-a-human"
effect = "require_approval"
actions = ["execute_tool"]
targets = ["pay"]

[[rules]]
id = "small-models"
effect = "allow"
actions = ["call_model"]
targets = ["gpt-4.1-mini", "local-*"]

[budgets]
max_tokens = 100
"""
POLICY = with_approver(POLICY)


def _records(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "ledger.jsonl").read_text().splitlines()]


def _runtime(evidence: Path, key: SigningKey, policy: str = POLICY) -> Runtime:
    return Runtime(policies=PolicySet.from_text(policy), evidence_dir=evidence, key=key)


def _verified(run_dir: Path, key: SigningKey) -> None:
    report = verify_run(run_dir, key.public_key)
    assert report.ok, report.failures


async def test_an_allowed_foreign_call_runs_once_and_is_in_the_evidence(
    evidence: Path, key: SigningKey
) -> None:
    ran: list[dict[str, Any]] = []

    async def body() -> str:
        ran.append({"path": "a.txt"})
        return "contents"

    @agent
    async def host(ctx: Context) -> str:
        out: str = await ctx.govern(
            "read_file", {"path": "a.txt"}, body, call_id="call_1", framework="test"
        )
        return out

    async with _runtime(evidence, key) as rt:
        handle = await rt.start(host, principal="alice")
        assert await handle.result() == "contents"
    assert ran == [{"path": "a.txt"}]
    recs = _records(handle.evidence_path)
    decision = next(d for d in decisions(recs) if d["target"] == "read_file")
    start = next(r for r in recs if r["kind"] == "step.start" and r["target"] == "read_file")
    end = next(r for r in recs if r["kind"] == "step.end" and r["step"] == start["step"])
    assert (decision["effect"], decision["rule"], decision["call"]) == ("allow", "reads", "call_1")
    assert (start["call"], start["framework"]) == ("call_1", "test")
    assert start["action"] == "execute_tool"
    assert end["status"] == "ok" and end["result"]
    _verified(handle.evidence_path, key)


async def test_a_denied_foreign_call_never_runs_and_the_run_goes_on(
    evidence: Path, key: SigningKey
) -> None:
    ran: list[str] = []

    async def body() -> None:
        ran.append("deleted")

    @agent
    async def host(ctx: Context) -> str:
        with pytest.raises(PolicyDenied) as denied:
            await ctx.govern("delete_file", {"path": "/"}, body, call_id="c", framework="test")
        assert ctx.stop is None  # a refused call, not a stopped run
        assert denied.value.check == "rule:no-delete"
        return "carried on"

    async with _runtime(evidence, key) as rt:
        handle = await rt.start(host, principal="alice")
        assert await handle.result() == "carried on"
    assert ran == []
    recs = _records(handle.evidence_path)
    assert not [r for r in recs if r["kind"] == "step.start" and r["target"] == "delete_file"]
    _verified(handle.evidence_path, key)


async def test_a_foreign_tool_needs_the_scopes_it_declares(evidence: Path, key: SigningKey) -> None:
    async def body() -> str:
        raise AssertionError("ran without the scope")

    @agent
    async def host(ctx: Context) -> str:
        with pytest.raises(PolicyDenied) as denied:
            await ctx.govern("read_secrets", {}, body, scopes={"vault:read"})
        return denied.value.check or ""

    async with _runtime(evidence, key) as rt:
        assert await rt.run(host, principal="alice", scopes={"web:read"}) == "scope.vault:read"


async def test_an_approval_held_foreign_call_runs_only_after_the_grant(
    evidence: Path, key: SigningKey
) -> None:
    events: list[str] = []

    async def body() -> str:
        events.append("paid")
        return "ok"

    @agent
    async def host(ctx: Context) -> str:
        out: str = await ctx.govern("pay", {"amount": 5}, body, call_id="p1", framework="test")
        return out

    async with _runtime(evidence, key) as rt:
        handle = await rt.start(host, principal="alice")
        request = await next_request(rt)
        assert (request.action, request.target) == ("execute_tool", "pay")
        assert events == []
        events.append("approved")
        rt.approve(request.id, approver=APPROVER)
        assert await handle.result() == "ok"
    assert events == ["approved", "paid"]
    _verified(handle.evidence_path, key)


async def test_revoking_the_run_cancels_a_foreign_body_running_outside_the_run_scope(
    evidence: Path, key: SigningKey
) -> None:
    """The MCP proxy's shape: the call is made from a task that the run's scope does not own."""
    started, cancelled = anyio.Event(), anyio.Event()
    outcome: list[BaseException] = []
    contexts: list[Context] = []
    release, hosting = anyio.Event(), anyio.Event()

    async def body() -> str:
        started.set()
        try:
            await anyio.sleep(30)
        except anyio.get_cancelled_exc_class():
            cancelled.set()
            raise
        return "late"

    @agent
    async def host(ctx: Context) -> None:
        contexts.append(ctx)
        hosting.set()
        await release.wait()

    async def outside_caller(ctx: Context) -> None:
        try:
            await ctx.govern("slow", {}, body, call_id="s1", framework="test")
        except BaseException as exc:  # what the outside caller sees
            outcome.append(exc)

    async with _runtime(evidence, key) as rt:
        handle = await rt.start(host, principal="alice")
        async with anyio.create_task_group() as tg:
            with anyio.fail_after(5):
                await hosting.wait()
                tg.start_soon(outside_caller, contexts[0])
                await started.wait()
                rt.revoke(handle.run_id, reason="stop it")
                await cancelled.wait()
        with pytest.raises(LeaseRevoked):
            await handle.result()
    assert len(outcome) == 1 and isinstance(outcome[0], LeaseRevoked)
    recs = _records(handle.evidence_path)
    start = next(r for r in recs if r["kind"] == "step.start" and r["target"] == "slow")
    stopped = [r for r in recs if r["kind"] == "steps.stopped"]
    assert any(start["step"] in r["steps"] for r in stopped), "the outcome was not recorded"
    assert next(r for r in recs if r["kind"] == "run.end")["status"] == "violation"
    _verified(handle.evidence_path, key)


async def test_a_call_id_is_one_call_reentering_it_replays_the_outcome(
    evidence: Path, key: SigningKey
) -> None:
    runs: list[int] = []

    async def body() -> int:
        runs.append(1)
        return len(runs)

    async def refused() -> None:
        raise AssertionError("a denied call ran on re-entry")

    @agent
    async def host(ctx: Context) -> list[Any]:
        first = await ctx.govern("read_x", {}, body, call_id="same", framework="lg")
        again = await ctx.govern("read_x", {}, body, call_id="same", framework="lg")
        other = await ctx.govern("read_x", {}, body, call_id="same", framework="other")
        denials = []
        for _ in range(2):
            try:
                await ctx.govern("delete_x", {}, refused, call_id="d", framework="lg")
            except PolicyDenied as exc:
                denials.append(exc.check)
        return [first, again, other, denials]

    async with _runtime(evidence, key) as rt:
        handle = await rt.start(host, principal="alice")
        assert await handle.result() == [1, 1, 2, ["rule:no-delete", "rule:no-delete"]]
    recs = _records(handle.evidence_path)
    decided = [d for d in decisions(recs) if d.get("framework") == "lg"]
    assert [(d["target"], d["call"]) for d in decided] == [("read_x", "same"), ("delete_x", "d")]
    _verified(handle.evidence_path, key)


async def test_a_call_id_still_running_is_refused(evidence: Path, key: SigningKey) -> None:
    entered = anyio.Event()

    async def body() -> None:
        entered.set()
        await anyio.sleep(0.05)

    @agent
    async def host(ctx: Context) -> str:
        async with anyio.create_task_group() as tg:
            tg.start_soon(functools.partial(ctx.govern, "read_x", {}, body, call_id="dup"))
            await entered.wait()
            with pytest.raises(RuntimeError, match="already running"):
                await ctx.govern("read_x", {}, body, call_id="dup")
        return "ok"

    async with _runtime(evidence, key) as rt:
        assert await rt.run(host, principal="alice") == "ok"


async def test_govern_sync_from_a_worker_thread_and_never_on_the_loop(
    evidence: Path, key: SigningKey
) -> None:
    def in_thread() -> list[Any]:
        ctx = current_context()  # copied into the worker thread
        out: list[Any] = [ctx.govern_sync("read_s", {"n": 1}, lambda: "synced", call_id="t1")]
        try:
            ctx.govern_sync("delete_s", {}, lambda: "deleted")
        except PolicyDenied as exc:
            out.append(exc.check)
        return out

    @agent
    async def host(ctx: Context) -> list[Any]:
        with pytest.raises(RuntimeError, match="event loop's thread"):
            ctx.govern_sync("read_s", {}, lambda: None)
        result: list[Any] = await anyio.to_thread.run_sync(in_thread)
        return result

    async with _runtime(evidence, key) as rt:
        handle = await rt.start(host, principal="alice")
        assert await handle.result() == ["synced", "rule:no-delete"]
    _verified(handle.evidence_path, key)


async def test_current_context_is_the_running_step_and_refuses_outside_one(
    evidence: Path, key: SigningKey
) -> None:
    seen: dict[str, Context] = {}

    @tool
    async def probe() -> str:
        seen["tool"] = current_context()
        return "probed"

    @agent
    async def host(ctx: Context) -> str:
        seen["agent"] = current_context()
        assert seen["agent"] is ctx
        out: str = await ctx.call(probe)
        assert current_context() is ctx  # restored after the tool call
        return out

    with pytest.raises(RuntimeError, match="no governed Tenure step"):
        current_context()
    async with _runtime(evidence, key, POLICY.replace('"slow"]', '"slow", "probe"]')) as rt:
        assert await rt.run(host, principal="alice") == "probed"
    assert seen["tool"] is not seen["agent"]
    assert seen["tool"].run_id == seen["agent"].run_id
    with pytest.raises(RuntimeError):
        current_context()


# -- model calls ------------------------------------------------------------------------------


async def test_a_model_call_records_its_usage_and_feeds_the_budget(
    evidence: Path, key: SigningKey
) -> None:
    @agent
    async def host(ctx: Context) -> str:
        async with ctx.model_call("gpt-4.1-mini", provider="openai") as call:
            call.record_usage(input_tokens=30, output_tokens=12, cost=0.002)
        return call.step_id or "closed"

    async with _runtime(evidence, key) as rt:
        handle = await rt.start(host, principal="alice")
        await handle.result()
    recs = _records(handle.evidence_path)
    usage = next(r for r in recs if r["kind"] == "usage")
    assert {k: usage[k] for k in ("model", "provider", "input_tokens", "output_tokens")} == {
        "model": "gpt-4.1-mini",
        "provider": "openai",
        "input_tokens": 30,
        "output_tokens": 12,
    }
    assert (usage["tokens"], usage["cost_micros"]) == (42, 2000)
    start = next(r for r in recs if r["kind"] == "step.start" and r["action"] == "call_model")
    assert start["target"] == "gpt-4.1-mini" and start["step"] == usage["step"]
    _verified(handle.evidence_path, key)


async def test_a_denied_model_name_never_reaches_the_model(evidence: Path, key: SigningKey) -> None:
    sent: list[str] = []

    @agent
    async def host(ctx: Context) -> str:
        with pytest.raises(PolicyDenied) as denied:
            async with ctx.model_call("gpt-5-pro", provider="openai"):
                sent.append("request")
        return denied.value.check or ""

    async with _runtime(evidence, key) as rt:
        assert await rt.run(host, principal="alice") == "rule:default-deny"
    assert sent == []


async def test_the_token_budget_stops_the_run_before_the_call_that_would_exceed_it(
    evidence: Path, key: SigningKey
) -> None:
    sent: list[int] = []

    @agent
    async def host(ctx: Context) -> None:
        for i in range(10):
            async with ctx.model_call("local-llm", max_tokens=30) as call:
                sent.append(i)
                call.record_usage(input_tokens=20, output_tokens=10)

    async with _runtime(evidence, key) as rt:
        handle = await rt.start(host, principal="alice")
        with pytest.raises(PolicyDenied) as stopped:
            await handle.result()
    # 3 calls of 30 tokens use 90 of 100; a 4th that may use 30 more is never sent
    assert sent == [0, 1, 2]
    assert stopped.value.check == "budget.max_tokens"
    assert "the call to local-llm was not sent" in stopped.value.reason
    recs = _records(handle.evidence_path)
    assert len([r for r in recs if r["kind"] == "step.start" and r["action"] == "call_model"]) == 3
    _verified(handle.evidence_path, key)


@pytest.mark.parametrize(
    "usage",
    [
        {"input_tokens": -1},
        {"output_tokens": True},
        {"input_tokens": 1.5},
        {"cost": math.nan},
        {"cost": math.inf},
        {"cost": -0.5},
        {"cost": "1"},
    ],
    ids=["negative", "bool", "float-count", "nan-cost", "inf-cost", "negative-cost", "str-cost"],
)
async def test_usage_that_lies_about_itself_is_refused(
    evidence: Path, key: SigningKey, usage: dict[str, Any]
) -> None:
    @agent
    async def host(ctx: Context) -> str:
        with pytest.raises((TypeError, ValueError)):
            ctx.record_usage(**usage)
        async with ctx.model_call("local-llm") as call:
            with pytest.raises((TypeError, ValueError)):
                call.record_usage(**usage)
        return "refused"

    async with _runtime(evidence, key) as rt:
        handle = await rt.start(host, principal="alice")
        assert await handle.result() == "refused"
    recs = _records(handle.evidence_path)
    assert all(r["tokens"] == 0 for r in recs if r["kind"] == "usage")


async def test_usage_is_recordable_from_a_tool_body(evidence: Path, key: SigningKey) -> None:
    @tool
    async def summarize(text: str) -> str:
        async with current_context().model_call("local-llm", provider="local") as call:
            call.record_usage(input_tokens=len(text), output_tokens=2)
        return "short"

    @agent
    async def host(ctx: Context) -> str:
        out: str = await ctx.call(summarize, "x" * 10)
        return out

    policy = POLICY.replace('"slow"]', '"slow", "summarize"]')
    async with _runtime(evidence, key, policy) as rt:
        handle = await rt.start(host, principal="alice")
        assert await handle.result() == "short"
    recs = _records(handle.evidence_path)
    tool_start = next(r for r in recs if r["kind"] == "step.start" and r["target"] == "summarize")
    model_start = next(r for r in recs if r["kind"] == "step.start" and r["action"] == "call_model")
    assert model_start["parent"] == tool_start["step"]
    assert next(r for r in recs if r["kind"] == "usage")["tokens"] == 12
    _verified(handle.evidence_path, key)


# -- lineage ----------------------------------------------------------------------------------


async def test_foreign_spans_nest_under_the_framework_span_and_model_spans_follow_genai(
    evidence: Path, key: SigningKey
) -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    framework = provider.get_tracer("framework")
    inner_parent: list[int] = []

    async def body() -> str:
        inner_parent.append(trace.get_current_span().get_span_context().span_id)
        return "ok"

    @agent
    async def host(ctx: Context) -> None:
        with framework.start_as_current_span("framework tool read_doc"):
            await ctx.govern("read_doc", {}, body, call_id="c9", framework="fw")
        async with ctx.model_call("gpt-4.1-mini", provider="openai") as call:
            call.record_usage(input_tokens=7, output_tokens=3, response_model="gpt-4.1-mini-2025")

    runtime = Runtime(
        policies=PolicySet.from_text(POLICY),
        evidence_dir=evidence,
        key=key,
        tracer_provider=provider,
    )
    async with runtime as rt:
        await rt.run(host, principal="alice")
    spans = {s.name: s for s in exporter.get_finished_spans()}
    fw, tool_span = spans["framework tool read_doc"], spans["execute_tool read_doc"]
    assert tool_span.parent is not None and tool_span.parent.span_id == fw.context.span_id
    assert tool_span.context.trace_id == spans["invoke_agent host"].context.trace_id
    assert inner_parent == [tool_span.context.span_id]  # the body runs under the call's span
    assert tool_span.attributes is not None
    assert tool_span.attributes["gen_ai.tool.call.id"] == "c9"
    assert tool_span.attributes["tenure.framework"] == "fw"
    chat = spans["chat gpt-4.1-mini"]
    assert chat.kind == trace.SpanKind.CLIENT
    assert chat.parent is not None
    assert chat.parent.span_id == spans["invoke_agent host"].context.span_id
    assert (
        dict(chat.attributes or {}).items()
        >= {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "gpt-4.1-mini",
            "gen_ai.provider.name": "openai",
            "gen_ai.usage.input_tokens": 7,
            "gen_ai.usage.output_tokens": 3,
            "gen_ai.response.model": "gpt-4.1-mini-2025",
        }.items()
    )
