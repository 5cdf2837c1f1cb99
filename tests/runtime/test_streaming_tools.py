"""Streaming (async generator) tools, governed item by item; timeouts; stalls; tracing.

A streaming tool call is decided and recorded before its first item, every item is gated,
a stop ends the stream within one item, and its end is recorded with the item count and a
digest of the items.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tenure import (
    Context,
    GovernanceUnavailable,
    LeaseRevoked,
    Runtime,
    SigningKey,
    agent,
    tool,
)
from tenure.evidence import verify_run
from tenure.policies import PolicySet

KEY = SigningKey.generate()


def _runtime(policy: PolicySet, evidence: Path, **kw: Any) -> Runtime:
    return Runtime(policies=policy, evidence_dir=evidence, key=KEY, **kw)


def _records(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / "ledger.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def _digest_of(items: list[Any]) -> str:
    from tenure.crypto import value_digest

    h = hashlib.sha256()
    for item in items:
        h.update(value_digest(item).encode())
    return "sha256:" + h.hexdigest()


class _Tokens:
    """The model side of the tests: hands out tokens as the test releases them."""

    def __init__(self) -> None:
        self.produced: list[str] = []
        self.send, self.receive = anyio.create_memory_object_stream[str](10)
        self.closed = False


@tool(scopes={"llm"})
async def tokens(n: int) -> AsyncIterator[str]:
    """Streams ``n`` tokens."""
    for i in range(n):
        await anyio.lowlevel.checkpoint()
        yield f"t{i}"


@agent(scopes={"llm"})
async def reader(ctx: Context, n: int) -> list[str]:
    """Reads a whole stream."""
    stream = await ctx.call(tokens, n)
    return [t async for t in stream]


async def test_streamed_tool_is_decided_before_its_first_item_and_its_end_is_recorded(
    allow_all: PolicySet, evidence: Path
) -> None:
    """Decision and ``step.start`` precede the items; the end records the item count and
    a digest of exactly the items delivered; the evidence verifies."""
    async with _runtime(allow_all, evidence) as rt:
        handle = await rt.start(reader, 5, principal="alice", scopes={"llm"})
        assert await handle.result() == [f"t{i}" for i in range(5)]
    recs = _records(handle.evidence_path)
    start = next(r for r in recs if r["kind"] == "step.start" and r["target"] == "tokens")
    assert start["effect"] == "allow"  # the decision, carried by the start record
    (end,) = [r for r in recs if r["kind"] == "step.end" and r["step"] == start["step"]]
    assert end["status"] == "ok" and end["items"] == 5
    assert end["result"] == _digest_of([f"t{i}" for i in range(5)])
    assert verify_run(handle.evidence_path, KEY.public_key).ok


async def test_streamed_tool_revoked_mid_stream_yields_no_item_after_the_revocation(
    allow_all: PolicySet, evidence: Path
) -> None:
    """Revoked after the third item: the agent receives nothing more (even an item the
    generator already had ready), the generator's ``finally`` runs, and the evidence
    shows the three items it did deliver."""
    model = _Tokens()
    received: list[str] = []
    after_revoke: list[str] = []
    revoked = False
    third = anyio.Event()

    @tool(scopes={"llm"})
    async def live_tokens() -> AsyncIterator[str]:
        try:
            async for token in model.receive:
                model.produced.append(token)
                yield token
        finally:
            model.closed = True

    @agent(scopes={"llm"})
    async def consumer(ctx: Context) -> None:
        stream = await ctx.call(live_tokens)
        async for token in stream:
            (after_revoke if revoked else received).append(token)
            if len(received) == 3:
                third.set()

    async with _runtime(allow_all, evidence) as rt:
        handle = await rt.start(consumer, principal="alice", scopes={"llm"})
        for i in range(3):
            await model.send.send(f"t{i}")
        await third.wait()
        await model.send.send("ready-before-the-revoke")
        rt.revoke(handle.run_id, reason="operator")
        revoked = True
        with pytest.raises(LeaseRevoked):
            await handle.result()
    model.send.close()
    model.receive.close()
    assert received == ["t0", "t1", "t2"]
    assert after_revoke == []
    assert model.closed
    recs = _records(handle.evidence_path)
    (end,) = [r for r in recs if r["kind"] == "step.end" and r.get("items") is not None]
    assert end["status"] == "stopped" and end["items"] == 3
    assert end["error"] == "LeaseRevoked"
    assert end["result"] == _digest_of(["t0", "t1", "t2"])


async def test_stream_closed_early_by_the_agent_is_recorded_as_closed(
    allow_all: PolicySet, evidence: Path
) -> None:
    """``async with stream:`` left after two items closes the generator: ``closed``, 2."""

    @agent(scopes={"llm"})
    async def sampler(ctx: Context) -> list[str]:
        out: list[str] = []
        async with await ctx.call(tokens, 100) as stream:
            async for t in stream:
                out.append(t)
                if len(out) == 2:
                    break
        return out

    async with _runtime(allow_all, evidence) as rt:
        handle = await rt.start(sampler, principal="alice", scopes={"llm"})
        assert await handle.result() == ["t0", "t1"]
    (end,) = [r for r in _records(handle.evidence_path) if r.get("items") is not None]
    assert (end["status"], end["items"]) == ("closed", 2)


def test_sync_generator_tool_is_refused_at_decoration() -> None:
    """A sync generator's items would be produced outside any gated await: refused."""
    with pytest.raises(TypeError, match="synchronous generator"):

        @tool
        def lines() -> Any:
            yield "x"


async def test_async_tool_timeout_raises_timeout_error_to_the_agent_and_is_recorded(
    allow_all: PolicySet, evidence: Path
) -> None:
    """``@tool(timeout=...)`` on an async tool: cancelled at the timeout (its cleanup runs),
    ``TimeoutError`` in the agent, the step's end recorded; the run goes on."""
    cleaned = False

    @tool(timeout=0.05)
    async def slow() -> None:
        nonlocal cleaned
        try:
            await anyio.sleep(30)
        finally:
            cleaned = True

    @agent
    async def patient(ctx: Context) -> str:
        try:
            await ctx.call(slow)
        except TimeoutError:
            return "timed out"
        return "finished"

    async with _runtime(allow_all, evidence) as rt:
        handle = await rt.start(patient, principal="alice")
        assert await handle.result() == "timed out"
    assert cleaned
    ends = [r for r in _records(handle.evidence_path) if r["kind"] == "step.end"]
    assert any(e["error"] == "TimeoutError" for e in ends)


async def test_loop_stall_caused_by_a_sync_tool_names_the_tool_and_the_fix(
    allow_all: PolicySet, evidence: Path
) -> None:
    """A synchronous tool blocking the loop past ``stall_bound``: the stop names it and
    says to declare ``isolation="thread"`` or ``"process"``."""

    breaches: list[Callable[[], int]] = []

    @tool
    def blocking_io() -> None:
        # Blocks until the detector has fired *during this call* (bounded): a loaded machine
        # may schedule the detector's thread late, and how soon it fires is a benchmark's
        # question. A breach counted before the call (the process descheduled while the run
        # started) flagged nothing of this tool's, so it must not end the wait.
        before = breaches[0]()
        deadline = time.monotonic() + 30
        while breaches[0]() == before:
            if time.monotonic() > deadline:
                raise AssertionError(f"no stall detected in 30 s (breaches before: {before})")
            time.sleep(0.01)

    @agent
    async def caller(ctx: Context) -> None:
        await ctx.call(blocking_io)

    async with _runtime(allow_all, evidence, stall_bound=0.2) as rt:
        stall = rt._stall
        assert stall is not None
        breaches.append(lambda: stall.breaches)
        with pytest.raises(GovernanceUnavailable) as info:
            await rt.run(caller, principal="alice")
    assert info.value.check == "loop.stall"
    assert "tool:blocking_io is a synchronous tool running on the event loop" in info.value.reason
    assert 'isolation="thread"' in info.value.reason


async def test_step_span_is_the_current_span_inside_agent_and_tool_bodies_with_the_sdk(
    allow_all: PolicySet, evidence: Path
) -> None:
    """With an SDK provider: a span started by instrumented code inside a tool (or agent)
    body is a child of that step's span, in the run's trace."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("user-lib")

    @tool
    async def instrumented() -> None:
        with tracer.start_as_current_span("http.client.request"):
            pass

    @agent
    async def outer(ctx: Context) -> None:
        with tracer.start_as_current_span("agent.own.work"):
            pass
        await ctx.call(instrumented)

    async with _runtime(allow_all, evidence, tracer_provider=provider) as rt:
        await rt.run(outer, principal="alice")
    spans = {s.name: s for s in exporter.get_finished_spans()}
    http, own = spans["http.client.request"], spans["agent.own.work"]
    tool_span, agent_span = spans["execute_tool instrumented"], spans["invoke_agent outer"]
    assert http.parent is not None and http.parent.span_id == tool_span.context.span_id
    assert own.parent is not None and own.parent.span_id == agent_span.context.span_id
    assert http.context.trace_id == agent_span.context.trace_id


async def test_step_span_is_the_current_span_with_light_lineage(
    allow_all: PolicySet, evidence: Path
) -> None:
    """Without any exporter (light spans): the current span context inside a tool body is
    the tool step's ids, as recorded in its ``step.start`` record."""
    seen: dict[str, str] = {}

    @tool
    async def look() -> None:
        ctx = trace.get_current_span().get_span_context()
        seen["trace"], seen["span"] = f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"

    @agent
    async def looker(ctx: Context) -> None:
        await ctx.call(look)

    async with _runtime(allow_all, evidence) as rt:
        handle = await rt.start(looker, principal="alice")
        await handle.result()
    start = next(
        r
        for r in _records(handle.evidence_path)
        if r["kind"] == "step.start" and r["target"] == "look"
    )
    assert (seen["trace"], seen["span"]) == (start["trace"], start["span"])
