"""Lineage through a real Runtime: the span tree is the agent tree, joinable with evidence."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from tenure import Context, LeaseRevoked, Runtime, SigningKey, agent, tool
from tenure.policies import PolicySet


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> TracerProvider:
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    return tp


@tool(scopes={"web"})
async def search(q: str) -> str:
    return q.upper()


@agent(scopes={"web"})
async def researcher(ctx: Context, topic: str) -> str:
    return str(await ctx.call(search, topic))


@agent(scopes={"web"})
async def summarizer(ctx: Context, text: str) -> str:
    return text[:3]


@agent(scopes={"web"})
async def planner(ctx: Context) -> str:
    async with ctx.parallel() as p:
        p.start(researcher, "a")
        p.start(researcher, "b")
    return str(await ctx.delegate(summarizer, "".join(p.results)))


def _tree(spans: tuple[ReadableSpan, ...]) -> set[tuple[str, str]]:
    by_id = {s.context.span_id: s for s in spans}
    edges = set()
    for s in spans:
        if s.parent is not None and s.parent.span_id in by_id:
            edges.add((by_id[s.parent.span_id].name, s.name))
    return edges


async def test_span_tree_matches_the_agent_tree_with_fan_out_and_delegation(
    allow_all: PolicySet,
    evidence: Path,
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
) -> None:
    """Run → planner → (researcher → search) ×2 and → summarizer, parents exactly so."""
    async with Runtime(
        policies=allow_all,
        evidence_dir=evidence,
        key=SigningKey.generate(),
        tracer_provider=provider,
    ) as rt:
        handle = await rt.start(planner, principal="alice", scopes={"web"}, ttl=30)
        assert await handle.result() == "AB"
    spans = exporter.get_finished_spans()
    names = sorted(s.name for s in spans)
    assert names == sorted(
        [
            "invoke_workflow planner",
            "invoke_agent planner",
            "invoke_agent researcher",
            "invoke_agent researcher",
            "execute_tool search",
            "execute_tool search",
            "invoke_agent summarizer",
        ]
    )
    assert _tree(spans) == {
        ("invoke_workflow planner", "invoke_agent planner"),
        ("invoke_agent planner", "invoke_agent researcher"),
        ("invoke_agent researcher", "execute_tool search"),
        ("invoke_agent planner", "invoke_agent summarizer"),
    }
    assert len({s.context.trace_id for s in spans}) == 1
    tool_span = next(s for s in spans if s.name == "execute_tool search")
    attrs = dict(tool_span.attributes or {})
    assert attrs["gen_ai.operation.name"] == "execute_tool"
    assert attrs["gen_ai.tool.name"] == "search"
    assert attrs["tenure.decision"] == "allow"
    assert attrs["tenure.rule.id"] == "tests-allow-everything"
    assert attrs["tenure.run.id"] == handle.run_id
    run_attrs = dict(
        next(s for s in spans if s.name.startswith("invoke_workflow")).attributes or {}
    )
    assert str(run_attrs["tenure.policy.digest"]).startswith("sha256:")
    assert str(run_attrs["tenure.attestation.digest"]).startswith("sha256:")
    # Evidence and trace join: every step.start names a span that was exported.
    exported = {f"{s.context.span_id:016x}" for s in spans}
    lines = (handle.evidence_path / "ledger.jsonl").read_text().splitlines()
    starts = [r for r in map(json.loads, lines) if r["kind"] == "step.start"]
    assert len(starts) == 6
    assert all(r["span"] in exported for r in starts)
    # (the ledger's own checkpoint records belong to no step and carry no span)
    trace_ids = {r["trace"] for r in map(json.loads, lines) if r["kind"] != "checkpoint"}
    assert trace_ids == {f"{spans[0].context.trace_id:032x}"}


async def test_a_revoked_runs_spans_end_with_error_status_and_the_reason(
    allow_all: PolicySet,
    evidence: Path,
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
) -> None:
    """The stop is visible in the trace: error status, the reason, a violation event."""
    ready = anyio.Event()

    @agent
    async def sleeper(ctx: Context) -> None:
        ready.set()
        await anyio.sleep(30)

    async with Runtime(
        policies=allow_all,
        evidence_dir=evidence,
        key=SigningKey.generate(),
        tracer_provider=provider,
    ) as rt:
        handle = await rt.start(sleeper, principal="alice", ttl=30)
        await ready.wait()
        rt.revoke(handle.run_id, reason="kill switch")
        with pytest.raises(LeaseRevoked):
            await handle.result()
    spans = exporter.get_finished_spans()
    assert {s.name for s in spans} == {"invoke_workflow sleeper", "invoke_agent sleeper"}
    for s in spans:
        assert s.status.status_code is StatusCode.ERROR
        assert "kill switch" in (s.status.description or "")
    run_span = next(s for s in spans if s.name.startswith("invoke_workflow"))
    assert any(e.name == "tenure.violation" for e in run_span.events)
    assert any(e.name == "tenure.lease.revoked" for e in run_span.events)
