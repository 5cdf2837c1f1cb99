"""LangGraph under Tenure: a governed ``ToolNode`` in a graph, and ``TenureMiddleware`` in
``create_agent``, each on the async path (``ainvoke``) and the sync one (``invoke`` in a
worker thread) — never failing open. The models are scripted LangChain chat models.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import anyio
import pytest
from langchain.agents import create_agent
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import tool as lc_tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.types import Command, interrupt
from pydantic import Field

from tenure import (
    Context,
    GovernanceUnavailable,
    LeaseRevoked,
    PolicyDenied,
    SigningKey,
    agent,
)
from tenure.adapters.langgraph import TenureMiddleware, governed_tool_node

from ..support.approver import APPROVER, next_request
from ..support.evidence import decisions
from ._shared import recording, records, runtime, verified


class Effects:
    def __init__(self) -> None:
        self.log: list[str] = []
        self.slow_started = threading.Event()
        self.release = threading.Event()


def make_tools(fx: Effects) -> list[Any]:
    @lc_tool
    def read_file(path: str) -> str:
        """Read a file."""
        fx.log.append(f"read:{path}")
        return f"contents of {path}"

    @lc_tool
    def delete_file(path: str) -> str:
        """Delete a file."""
        fx.log.append(f"deleted:{path}")
        return "deleted"

    @lc_tool
    def pay(amount: int) -> str:
        """Pay."""
        fx.log.append(f"paid:{amount}")
        return f"paid {amount}"

    @lc_tool
    async def slow() -> str:
        """Wait a long time."""
        fx.slow_started.set()
        try:
            await anyio.sleep(30)
        except anyio.get_cancelled_exc_class():
            fx.log.append("slow:cancelled")
            raise
        return "late"

    @lc_tool
    def slow_sync() -> str:
        """Block until released (sync code cannot be interrupted)."""
        fx.slow_started.set()
        fx.release.wait(30)
        fx.log.append("slow_sync:returned")
        return "late"

    @lc_tool
    def confirm(question: str) -> str:
        """Ask a person (a LangGraph interrupt)."""
        answer = interrupt(question)
        fx.log.append(f"confirmed:{answer}")
        return str(answer)

    return [read_file, delete_file, pay, slow, slow_sync, confirm]


def tool_graph(fx: Effects, calls: list[dict[str, Any]], checkpointer: Any = None) -> Any:
    """model (scripted: asks for ``calls``) → governed ToolNode → end."""

    def model(state: MessagesState) -> dict[str, Any]:
        return {"messages": [AIMessage("", tool_calls=calls)]}

    builder = StateGraph(MessagesState)
    builder.add_node("model", model)
    builder.add_node("tools", governed_tool_node(make_tools(fx)))
    builder.add_edge(START, "model")
    builder.add_edge("model", "tools")
    builder.add_edge("tools", END)
    return builder.compile(checkpointer=checkpointer)


def call(name: str, call_id: str = "c1", **args: Any) -> dict[str, Any]:
    return {"name": name, "args": args, "id": call_id, "type": "tool_call"}


def tool_messages(state: dict[str, Any]) -> list[ToolMessage]:
    return [m for m in state["messages"] if isinstance(m, ToolMessage)]


def runner(graph: Any, sync: bool) -> Any:
    """A Tenure agent running ``graph``: ``ainvoke``, or ``invoke`` in a worker thread."""
    start = {"messages": [HumanMessage("go")]}

    @agent
    async def host(ctx: Context) -> Any:
        if sync:
            return await anyio.to_thread.run_sync(graph.invoke, start)
        return await graph.ainvoke(start)

    return host


# -- the governed ToolNode --------------------------------------------------------------------


@pytest.mark.parametrize("sync", [False, True], ids=["ainvoke", "invoke"])
async def test_tool_node_an_allowed_tool_runs_and_is_in_the_evidence(
    evidence: Path, key: SigningKey, sync: bool
) -> None:
    fx = Effects()
    graph = tool_graph(fx, [call("read_file", path="a.txt")])
    async with runtime(evidence, key) as rt:
        handle = await rt.start(runner(graph, sync), principal="alice")
        state = await handle.result()
    (msg,) = tool_messages(state)
    assert msg.content == "contents of a.txt" and msg.status == "success"
    assert fx.log == ["read:a.txt"]
    start = next(r for r in records(handle.evidence_path) if r.get("target") == "read_file")
    assert (start["framework"], start["call"]) == ("langgraph", "c1")
    verified(handle.evidence_path, key)


@pytest.mark.parametrize("sync", [False, True], ids=["ainvoke", "invoke"])
async def test_tool_node_a_denied_tool_never_runs_and_the_model_gets_an_error_message(
    evidence: Path, key: SigningKey, sync: bool
) -> None:
    fx = Effects()
    graph = tool_graph(fx, [call("delete_file", path="/")])
    async with runtime(evidence, key) as rt:
        handle = await rt.start(runner(graph, sync), principal="alice")
        state = await handle.result()
    (msg,) = tool_messages(state)
    assert msg.status == "error" and "Denied by Tenure (no-delete)" in str(msg.content)
    assert fx.log == []
    verified(handle.evidence_path, key)


async def test_tool_node_outside_a_governed_step_refuses_every_call(
    evidence: Path, key: SigningKey
) -> None:
    """Never fail open: graph.invoke() with no Tenure step around it runs nothing."""
    fx = Effects()
    graph = tool_graph(fx, [call("read_file", path="x")])
    with pytest.raises(RuntimeError, match="no governed Tenure step"):
        await anyio.to_thread.run_sync(graph.invoke, {"messages": [HumanMessage("go")]})
    with pytest.raises(RuntimeError, match="no governed Tenure step"):
        await graph.ainvoke({"messages": [HumanMessage("go")]})
    assert fx.log == []


async def test_tool_node_invoke_blocking_the_event_loop_stops_the_run_and_runs_nothing(
    evidence: Path, key: SigningKey
) -> None:
    """graph.invoke() on the loop's own thread: its pool thread cannot reach the loop to be
    decided; it neither hangs nor runs the tool: the stall detector stops the run."""
    fx = Effects()
    graph = tool_graph(fx, [call("read_file", path="x")])

    @agent
    async def host(ctx: Context) -> Any:
        return graph.invoke({"messages": [HumanMessage("go")]})  # blocks the loop

    async with runtime(evidence, key) as rt:
        with pytest.raises(GovernanceUnavailable) as stopped:
            await rt.run(host, principal="alice")
    assert stopped.value.check == "loop.stall"
    assert fx.log == []


async def test_tool_node_an_approval_held_tool_waits_for_the_grant(
    evidence: Path, key: SigningKey
) -> None:
    fx = Effects()
    graph = tool_graph(fx, [call("pay", amount=7)])
    async with runtime(evidence, key) as rt:
        handle = await rt.start(runner(graph, True), principal="alice")
        request = await next_request(rt)
        assert request.target == "pay" and fx.log == []
        rt.approve(request.id, approver=APPROVER)
        state = await handle.result()
    assert tool_messages(state)[0].content == "paid 7" and fx.log == ["paid:7"]
    verified(handle.evidence_path, key)


async def test_tool_node_revoking_mid_tool_cancels_it_and_the_run_ends_with_the_violation(
    evidence: Path, key: SigningKey
) -> None:
    fx = Effects()
    graph = tool_graph(fx, [call("slow")])
    async with runtime(evidence, key) as rt:
        handle = await rt.start(runner(graph, False), principal="alice")
        await anyio.to_thread.run_sync(fx.slow_started.wait, 10)
        rt.revoke(handle.run_id, reason="stop")
        with pytest.raises(LeaseRevoked):
            await handle.result()
    assert fx.log == ["slow:cancelled"]
    recs = records(handle.evidence_path)
    assert next(r for r in recs if r["kind"] == "run.end")["status"] == "violation"
    verified(handle.evidence_path, key)


async def test_tool_node_sync_revoked_mid_tool_discards_its_result_and_ends_with_the_violation(
    evidence: Path, key: SigningKey
) -> None:
    """graph.invoke(): the sync tool cannot be interrupted, but what it returns after the
    revocation reaches no one and the run ends with the violation."""
    fx = Effects()
    graph = tool_graph(fx, [call("slow_sync")])
    async with runtime(evidence, key) as rt:
        handle = await rt.start(runner(graph, True), principal="alice")
        await anyio.to_thread.run_sync(fx.slow_started.wait, 10)
        rt.revoke(handle.run_id, reason="stop")
        fx.release.set()
        with pytest.raises(LeaseRevoked):
            await handle.result()
    assert fx.log == ["slow_sync:returned"]
    recs = records(handle.evidence_path)
    start = next(r for r in recs if r.get("target") == "slow_sync" and r["kind"] == "step.start")
    assert not [r for r in recs if r["kind"] == "step.end" and r["step"] == start["step"]]
    assert any(start["step"] in r["steps"] for r in recs if r["kind"] == "steps.stopped")
    verified(handle.evidence_path, key)


async def test_tool_node_an_interrupt_re_execution_replays_calls_that_already_ran(
    evidence: Path, key: SigningKey
) -> None:
    fx = Effects()
    calls = [call("read_file", "r1", path="once.txt"), call("confirm", "q1", question="ok?")]
    graph = tool_graph(fx, calls, InMemorySaver())
    config = {"configurable": {"thread_id": "t1"}}

    @agent
    async def host(ctx: Context) -> Any:
        first = await graph.ainvoke({"messages": [HumanMessage("go")]}, config)
        assert "__interrupt__" in first
        return await graph.ainvoke(Command(resume="yes"), config)

    async with runtime(evidence, key) as rt:
        handle = await rt.start(host, principal="alice")
        state = await handle.result()
    assert fx.log == ["read:once.txt", "confirmed:yes"]  # read_file ran once, not twice
    assert sorted(str(m.content) for m in tool_messages(state)) == ["contents of once.txt", "yes"]
    recs = records(handle.evidence_path)
    reads = [d for d in decisions(recs) if d["target"] == "read_file"]
    assert [r["call"] for r in reads] == ["r1"]  # decided and counted once
    verified(handle.evidence_path, key)


async def test_tool_node_spans_nest_under_the_callers_span_in_one_trace(
    evidence: Path, key: SigningKey
) -> None:
    provider, exporter = recording()
    tracer = provider.get_tracer("app")
    fx = Effects()
    graph = tool_graph(fx, [call("read_file", path="t")])

    @agent
    async def host(ctx: Context) -> Any:
        with tracer.start_as_current_span("graph ainvoke"):
            return await graph.ainvoke({"messages": [HumanMessage("go")]})

    async with runtime(evidence, key, tracer_provider=provider) as rt:
        await rt.run(host, principal="alice")
    spans = {s.name: s for s in exporter.get_finished_spans()}
    governed, around = spans["execute_tool read_file"], spans["graph ainvoke"]
    assert governed.parent is not None and governed.parent.span_id == around.context.span_id
    assert around.parent is not None
    assert around.parent.span_id == spans["invoke_agent host"].context.span_id
    assert len({s.context.trace_id for s in spans.values()}) == 1


# -- create_agent with the middleware ---------------------------------------------------------


class ScriptedChat(BaseChatModel):
    """A chat model that answers from a script and keeps what it was sent."""

    script: list[AIMessage]
    model_name: str = "scripted-chat"
    sent: list[list[BaseMessage]] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        self.sent.append(list(messages))
        reply = self.script[min(len(self.sent), len(self.script)) - 1]
        return ChatResult(generations=[ChatGeneration(message=reply)])

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self


def scripted(*calls: dict[str, Any], name: str = "scripted-chat") -> ScriptedChat:
    usage = {"input_tokens": 11, "output_tokens": 4, "total_tokens": 15}
    replies = [AIMessage("", tool_calls=list(calls), usage_metadata=usage)]
    replies.append(AIMessage("done", usage_metadata=usage))
    return ScriptedChat(script=replies, model_name=name)


def agent_runner(model: ScriptedChat, fx: Effects, sync: bool) -> Any:
    lc_agent = create_agent(model, make_tools(fx), middleware=[TenureMiddleware()])
    return runner(lc_agent, sync)


@pytest.mark.parametrize("sync", [False, True], ids=["ainvoke", "invoke"])
async def test_middleware_governs_tools_and_model_calls(
    evidence: Path, key: SigningKey, sync: bool
) -> None:
    fx = Effects()
    model = scripted(call("read_file", "a1", path="k"), call("delete_file", "a2", path="k"))
    async with runtime(evidence, key) as rt:
        handle = await rt.start(agent_runner(model, fx, sync), principal="alice")
        state = await handle.result()
    assert fx.log == ["read:k"]  # delete_file was denied: never ran
    denied = next(m for m in model.sent[1] if isinstance(m, ToolMessage) and m.status == "error")
    assert "Denied by Tenure (no-delete)" in str(denied.content)  # the model saw the denial
    assert state["messages"][-1].content == "done"
    recs = records(handle.evidence_path)
    usage = [r for r in recs if r["kind"] == "usage"]
    assert [(u["model"], u["input_tokens"], u["output_tokens"]) for u in usage] == [
        ("scripted-chat", 11, 4),
        ("scripted-chat", 11, 4),
    ]
    verified(handle.evidence_path, key)


@pytest.mark.parametrize("sync", [False, True], ids=["ainvoke", "invoke"])
async def test_middleware_a_denied_model_name_never_reaches_the_model(
    evidence: Path, key: SigningKey, sync: bool
) -> None:
    fx = Effects()
    model = scripted(call("read_file", path="k"), name="gpt-5-pro")
    async with runtime(evidence, key) as rt:
        with pytest.raises(PolicyDenied) as denied:
            await rt.run(agent_runner(model, fx, sync), principal="alice")
    assert denied.value.check == "rule:default-deny"
    assert model.sent == [] and fx.log == []


def test_governed_tool_node_sets_its_own_wrappers() -> None:
    with pytest.raises(TypeError, match="sets wrap_tool_call itself"):
        governed_tool_node(make_tools(Effects()), wrap_tool_call=lambda r, e: e(r))


@pytest.mark.parametrize("sync", [False, True], ids=["ainvoke", "invoke"])
async def test_middleware_can_leave_model_calls_ungoverned(
    evidence: Path, key: SigningKey, sync: bool
) -> None:
    fx = Effects()
    model = scripted(call("read_file", path="k"))
    lc_agent = create_agent(
        model, make_tools(fx), middleware=[TenureMiddleware(govern_models=False)]
    )
    async with runtime(evidence, key) as rt:
        handle = await rt.start(runner(lc_agent, sync), principal="alice")
        await handle.result()
    recs = records(handle.evidence_path)
    assert not [r for r in recs if r.get("action") == "call_model"]
    assert fx.log == ["read:k"]  # the tool call is still governed
    assert [r["target"] for r in recs if r["kind"] == "step.start"][1:] == ["read_file"]
