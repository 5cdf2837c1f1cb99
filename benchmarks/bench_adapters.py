"""What governing another framework costs per tool call (issue 15).

Each framework is measured governed and ungoverned in the same process, back to back in
each round (order alternating), median of the rounds; both run inside the same Tenure
agent, so the difference is the adapter plus one governed step (decision, step.start,
step.end records, a span) per call. The frameworks run on their own offline models:
pydantic-ai ``FunctionModel``, a scripted LangGraph node, the Agents SDK's
``ScriptedModel``. The MCP figures are per ``tools/call`` from a real stdio client to a real
stdio server, directly and through a ``tenure mcp-proxy`` process, and from a real
Streamable HTTP client to the same server served over Streamable HTTP (uvicorn), directly
and through ``tenure mcp-proxy --listen ... --upstream URL``. Default runtime settings
(stall bound included), allow-all policy, evidence on local disk.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from benchmarks._report import Report, Target
from tenure import Context, Runtime, agent
from tenure.policies import PolicySet

ALLOW_ALL = 'version = 1\ndefault = "deny"\n\n[[rules]]\nid = "all"\neffect = "allow"\n'
GOAL_US = 50.0
SERVER = Path(__file__).resolve().parents[1] / "tests" / "adapters" / "mcp_server.py"

Timed = Callable[[], Awaitable[float]]


async def _pair(governed: Timed, bare: Timed, rounds: int) -> tuple[float, float]:
    """Median seconds of each, measured alternately (a warm-up round first)."""
    await governed()
    await bare()
    g: list[float] = []
    b: list[float] = []
    for i in range(rounds):
        for fn, out in ((governed, g), (bare, b)) if i % 2 == 0 else ((bare, b), (governed, g)):
            # As timeit does: no collection inside a timed loop. With the frameworks loaded a
            # full collection takes ~0.4 s and would land in whichever side it hit.
            gc.collect()
            gc.disable()
            try:
                out.append(await fn())
            finally:
                gc.enable()
    return statistics.median(g), statistics.median(b)


def _rows(report: Report, name: str, calls: int, g: float, b: float) -> None:
    g_us, b_us = g / calls * 1e6, b / calls * 1e6
    report.add("adapters", f"{name}, per tool call", g_us, "µs", baseline=b_us)
    report.add(
        "adapters",
        f"{name}, added per tool call",
        g_us - b_us,
        "µs",
        target=Target(GOAL_US),
    )


# -- the seam itself ---------------------------------------------------------------------------


async def _seam(calls: int) -> tuple[Timed, Timed, Timed]:
    async def body() -> int:
        return 1

    def timed(fn: Callable[[Context], Awaitable[None]]) -> Timed:
        @agent(name="bench_seam")
        async def host(ctx: Context) -> float:
            t = time.perf_counter()
            await fn(ctx)
            return time.perf_counter() - t

        async def run() -> float:
            seconds: float = await _RT.run(host, principal="bench")
            return seconds

        return run

    async def governed(ctx: Context) -> None:
        for i in range(calls):
            await ctx.govern("t", {"i": i}, body, call_id=str(i), framework="bench")

    async def bare(ctx: Context) -> None:
        for _ in range(calls):
            await body()

    async def model(ctx: Context) -> None:
        for _ in range(calls):
            async with ctx.model_call("m") as call:
                call.record_usage(input_tokens=1, output_tokens=1)

    return timed(governed), timed(bare), timed(model)


# -- pydantic-ai --------------------------------------------------------------------------------


def _pydantic(calls: int) -> tuple[Timed, Timed]:
    from pydantic_ai import Agent as PydanticAgent
    from pydantic_ai.capabilities import AbstractCapability
    from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart
    from pydantic_ai.models.function import AgentInfo, FunctionModel
    from pydantic_ai.toolsets import WrapperToolset
    from pydantic_ai.usage import UsageLimits

    from tenure.adapters.pydantic_ai import tenure_capability

    def script(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        n = len(messages) // 2
        if n < calls:
            return ModelResponse(parts=[ToolCallPart("lookup", json.dumps({"n": n}), f"c{n}")])
        return ModelResponse(parts=[TextPart("done")])

    support = PydanticAgent(FunctionModel(script))

    @support.tool_plain
    def lookup(n: int) -> int:
        return n

    def timed(capabilities: list[Any]) -> Timed:
        @agent(name="bench_pydantic")
        async def host(ctx: Context) -> float:
            t = time.perf_counter()
            limits = UsageLimits(request_limit=calls + 5)
            await support.run("go", capabilities=capabilities, usage_limits=limits)
            return time.perf_counter() - t

        async def run() -> float:
            seconds: float = await _RT.run(host, principal="bench")
            return seconds

        return run

    @dataclass
    class _PassThrough(AbstractCapability[Any]):
        """The same hook, doing nothing: what any toolset wrapper costs pydantic-ai."""

        def get_wrapper_toolset(self, toolset: Any) -> Any:
            return WrapperToolset(toolset)

    return timed([tenure_capability(govern_models=False)]), timed([_PassThrough()])


# -- LangGraph ---------------------------------------------------------------------------------


def _langgraph(calls: int) -> tuple[Timed, Timed, Timed, Timed]:
    from langchain_core.messages import AIMessage, HumanMessage
    from langchain_core.tools import tool as lc_tool
    from langgraph.graph import END, START, MessagesState, StateGraph
    from langgraph.prebuilt import ToolNode

    from tenure.adapters.langgraph import governed_tool_node

    @lc_tool
    def lookup(n: int) -> int:
        """Look up."""
        return n

    def graph(node: Any) -> Any:
        def model(state: MessagesState) -> dict[str, Any]:
            n = len(state["messages"])
            return {
                "messages": [
                    AIMessage("", tool_calls=[{"name": "lookup", "args": {"n": n}, "id": f"c{n}"}])
                ]
            }

        builder = StateGraph(MessagesState)
        builder.add_node("model", model)
        builder.add_node("tools", node)
        builder.add_edge(START, "model")
        builder.add_edge("model", "tools")
        builder.add_edge("tools", END)
        return builder.compile()

    # The baseline has the same hooks doing nothing: giving ToolNode wrappers changes how it
    # runs a sync tool, so a wrapper-less node would measure that, not the governance.
    def passthrough(request: Any, execute: Any) -> Any:
        return execute(request)

    async def apassthrough(request: Any, execute: Any) -> Any:
        return await execute(request)

    bare_node = ToolNode([lookup], wrap_tool_call=passthrough, awrap_tool_call=apassthrough)
    governed, bare = graph(governed_tool_node([lookup])), graph(bare_node)

    def timed(g: Any, sync: bool) -> Timed:
        @agent(name="bench_langgraph")
        async def host(ctx: Context) -> float:
            start = {"messages": [HumanMessage("go")]}
            t = time.perf_counter()
            for _ in range(calls):
                if sync:
                    await anyio.to_thread.run_sync(lambda: g.invoke(start))
                else:
                    await g.ainvoke(start)
            return time.perf_counter() - t

        async def run() -> float:
            seconds: float = await _RT.run(host, principal="bench")
            return seconds

        return run

    return timed(governed, False), timed(bare, False), timed(governed, True), timed(bare, True)


# -- OpenAI Agents SDK -------------------------------------------------------------------------


def _openai_agents(calls: int) -> tuple[Timed, Timed]:
    from agents import Agent as SdkAgent
    from agents import Runner, function_tool, set_tracing_disabled
    from agents.testing import ScriptedModel, assistant_message, function_call

    from tenure.adapters.openai_agents import govern_agent

    set_tracing_disabled(True)

    @function_tool
    def lookup(n: int) -> int:
        """Look up."""
        return n

    def timed(governed: bool) -> Timed:
        @agent(name="bench_openai_agents")
        async def host(ctx: Context) -> float:
            steps: list[Any] = [
                [function_call("lookup", {"n": i}, call_id=f"c{i}")] for i in range(calls)
            ]
            sdk = SdkAgent(
                name="b", model=ScriptedModel([*steps, [assistant_message("ok")]]), tools=[lookup]
            )
            if governed:
                target = govern_agent(sdk, govern_model=False)
            else:  # the same clone with a pass-through invoker: the hook doing nothing
                inner = lookup.on_invoke_tool

                async def passthrough(tool_ctx: Any, args: str) -> Any:
                    return await inner(tool_ctx, args)

                target = sdk.clone(tools=[dataclasses.replace(lookup, on_invoke_tool=passthrough)])
            t = time.perf_counter()
            await Runner.run(target, "go", max_turns=calls + 5)
            return time.perf_counter() - t

        async def run() -> float:
            seconds: float = await _RT.run(host, principal="bench")
            return seconds

        return run

    return timed(True), timed(False)


# -- MCP ---------------------------------------------------------------------------------------


def _proxy_command(tmp: Path, *upstream: str) -> list[str]:
    """``tenure mcp-proxy`` on the allow-all policy, in front of ``upstream``."""
    policy = tmp / "policy.toml"
    policy.write_text(ALLOW_ALL)
    tenure = str(Path(sys.executable).with_name("tenure"))
    evidence = str(tmp / "runs")
    return [
        tenure,
        "mcp-proxy",
        "--policy",
        str(policy),
        "--principal",
        "bench",
        "--evidence-dir",
        evidence,
        *upstream,
    ]


async def _read_files(session: Any, calls: int) -> float:
    """Seconds for ``calls`` sequential ``tools/call``s on a fresh session (one warm-up)."""
    await session.initialize()
    await session.call_tool("read_file", {"path": "warm"})
    t = time.perf_counter()
    for i in range(calls):
        await session.call_tool("read_file", {"path": str(i)})
    return time.perf_counter() - t


def _mcp(calls: int, tmp: Path) -> tuple[Timed, Timed]:
    from mcp import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    server = [str(SERVER), str(tmp / "marks.txt")]
    tenure, *proxied = _proxy_command(tmp, "--", sys.executable, *server)

    quiet = open(os.devnull, "w")  # noqa: SIM115 (the proxy's stderr lines, for the process)

    def timed(command: str, args: list[str]) -> Timed:
        async def run() -> float:
            params = StdioServerParameters(command=command, args=args, env=dict(os.environ))
            async with stdio_client(params, errlog=quiet) as (r, w), ClientSession(r, w) as s:
                return await _read_files(s, calls)

        return run

    return timed(tenure, proxied), timed(sys.executable, server)


async def _ready(what: str, found: Callable[[], str | None]) -> str:
    """What ``found`` returns once another process has written it (a bounded wait)."""
    with anyio.move_on_after(30):
        while (value := found()) is None:  # noqa: ASYNC110 (another process writes it)
            await anyio.sleep(0.02)
        return value
    raise RuntimeError(f"{what} did not start within 30 s")


@asynccontextmanager
async def _mcp_http(calls: int, tmp: Path) -> AsyncIterator[tuple[Timed, Timed]]:
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    url_file, log = tmp / "upstream.url", tmp / "http-proxy.log"
    server = await anyio.open_process(
        [sys.executable, str(SERVER), str(tmp / "marks.txt"), "--http", str(url_file)],
        stdout=None,
        stderr=subprocess.DEVNULL,
    )
    proxy: Any = None
    try:
        upstream = await _ready(
            "the server", lambda: url_file.read_text() if url_file.exists() else None
        )
        command = _proxy_command(tmp, "--listen", "127.0.0.1:0", "--upstream", upstream)
        with log.open("w") as err:
            proxy = await anyio.open_process(command, stdout=err, stderr=err)

        def served() -> str | None:
            m = re.search(r"on (http://\S+)", log.read_text())
            return m.group(1) if m else None

        proxied = await _ready("the proxy", served)

        def timed(url: str) -> Timed:
            async def run() -> float:
                async with streamable_http_client(url) as (r, w), ClientSession(r, w) as s:
                    return await _read_files(s, calls)

            return run

        yield timed(proxied), timed(upstream)
    finally:
        for process in (proxy, server):
            if process is not None and process.returncode is None:
                process.send_signal(signal.SIGTERM)
                with anyio.move_on_after(15):
                    await process.wait()
                if process.returncode is None:
                    process.kill()
                    await process.wait()


def _proxy_rows(report: Report, over: str, direct: str, calls: int, g: float, b: float) -> None:
    report.add(
        "adapters",
        f"MCP tools/call through tenure mcp-proxy{over}",
        g / calls * 1e6,
        "µs",
        baseline=b / calls * 1e6,
        note=f"vs direct {direct}",
    )
    report.add("adapters", f"MCP proxy{over}, added per tools/call", (g - b) / calls * 1e6, "µs")


_RT: Runtime


def run(report: Report, quick: bool = False) -> None:
    """Add the adapter rows to ``report``."""
    calls = 30 if quick else 60
    rounds = 3 if quick else 11

    async def main() -> None:
        global _RT
        with tempfile.TemporaryDirectory() as tmp_name:
            tmp = Path(tmp_name)
            policy = PolicySet.from_text(ALLOW_ALL)
            async with Runtime(policies=policy, evidence_dir=tmp / "evidence") as rt:
                _RT = rt
                seam_g, seam_b, seam_m = await _seam(calls)
                g, b = await _pair(seam_g, seam_b, rounds)
                _rows(report, "seam: ctx.govern (trivial body)", calls, g, b)
                m, b = await _pair(seam_m, seam_b, rounds)
                report.add(
                    "adapters", "seam: ctx.model_call with usage, per call", m / calls * 1e6, "µs"
                )
                g, b = await _pair(*_pydantic(calls), rounds)
                _rows(report, "pydantic-ai capability", calls, g, b)
                ag, ab, sg, sb = _langgraph(calls // 3)
                g, b = await _pair(ag, ab, rounds)
                _rows(report, "LangGraph ToolNode, ainvoke", calls // 3, g, b)
                g, b = await _pair(sg, sb, rounds)
                _rows(report, "LangGraph ToolNode, invoke (thread)", calls // 3, g, b)
                g, b = await _pair(*_openai_agents(calls // 3), rounds)
                _rows(report, "OpenAI Agents FunctionTool", calls // 3, g, b)
            g, b = await _pair(*_mcp(calls, tmp), max(3, rounds // 2))
            _proxy_rows(report, "", "stdio", calls, g, b)
            async with _mcp_http(calls, tmp) as (proxied, direct):
                g, b = await _pair(proxied, direct, max(3, rounds // 2))
            _proxy_rows(report, " over Streamable HTTP", "Streamable HTTP", calls, g, b)

    anyio.run(main)
