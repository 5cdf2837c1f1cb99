"""Agents served by the test workers (``tenure worker --agents tests.distributed.pool_agents``).

Both the delegating test process and every worker import this module, so the code digest
a delegation pins is the one each worker measures.
"""

from __future__ import annotations

import time

import anyio

from tenure import Context, GovernanceUnavailable, agent, tool


@tool(scopes={"notes:read"})
async def lookup(topic: str) -> str:
    return f"notes on {topic}"


@tool
async def mark(path: str) -> None:
    """Leave a file behind: the test's sign that the step is running on its worker."""
    await anyio.Path(path).write_text("running\n")


@agent(scopes={"notes:read"})
async def researcher(ctx: Context, topic: str) -> str:
    found: str = await ctx.call(lookup, topic)
    return found.upper()


@agent(scopes={"notes:read"})
async def planner(ctx: Context, topics: list[str]) -> list[str]:
    async with ctx.parallel() as p:
        for topic in topics:
            p.start(researcher, topic, on="pool:research")
    return list(p.results)


@agent
async def lingerer(ctx: Context, marker: str) -> str:
    """Marks that it runs, then waits until it is stopped."""
    await ctx.call(mark, marker)
    await anyio.sleep_forever()
    return "never"


@agent
async def delegates_lingerer(ctx: Context, marker: str) -> str:
    result: str = await ctx.delegate(lingerer, marker, on="pool:research")
    return result


@agent(scopes={"notes:read"})
async def spender(ctx: Context) -> int:
    """Calls a tool until the run's shared budget refuses one."""
    calls = 0
    while True:
        await ctx.call(lookup, "budget")
        calls += 1


@agent(scopes={"notes:read"})
async def budget_planner(ctx: Context, width: int) -> list[int]:
    async with ctx.parallel() as p:
        for _ in range(width):
            p.start(spender, on="pool:research")
    return list(p.results)


@agent
async def fan_lingerers(ctx: Context, markers: list[str]) -> list[str]:
    """One lingering part per marker, in parallel on the pool (the revocation benchmark)."""
    async with ctx.parallel() as p:
        for marker in markers:
            p.start(lingerer, marker, on="pool:research")
    return list(p.results)


@agent(scopes={"notes:read"})
async def caller(ctx: Context, n: int) -> list[int]:
    """``n`` governed tool calls in a row; each call's latency in ns (the per-call benchmark)."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        await ctx.call(lookup, "x")
        times.append(time.perf_counter_ns() - t0)
    return times


@tool
async def hold(marker: str, release: str) -> str:
    """Mark that it runs, then hold its place until the ``release`` file exists."""
    await anyio.Path(marker).write_text("held\n")
    while not await anyio.Path(release).exists():  # noqa: ASYNC110 (another process's file)
        await anyio.sleep(0.02)
    return "released"


@agent
async def holder(ctx: Context, marker: str, release: str, go: str | None = None) -> str:
    """A part of a run that holds one live tool call until released; with ``go``, it makes
    the call only once that file exists (the test orders the parts' calls after an event
    it has seen)."""
    while go is not None and not await anyio.Path(go).exists():  # noqa: ASYNC110
        await anyio.sleep(0.02)
    held: str = await ctx.call(hold, marker, release)
    return held


@agent
async def crowd(ctx: Context, markers: list[str], release: str, go: str | None = None) -> list[str]:
    """One holder per marker, in parallel on the pool."""
    async with ctx.parallel() as p:
        for marker in markers:
            p.start(holder, marker, release, go, on="pool:research")
    return list(p.results)


@agent(scopes={"notes:read"})
async def sequential(ctx: Context, calls: int) -> int:
    """``calls`` tool calls one after the other (each ends before the next starts)."""
    for _ in range(calls):
        await ctx.call(lookup, "again")
    return calls


@agent(scopes={"notes:read"})
async def sequentials(ctx: Context, parts: int, calls: int) -> list[int]:
    async with ctx.parallel() as p:
        for _ in range(parts):
            p.start(sequential, calls, on="pool:research")
    return list(p.results)


@agent
async def resilient(ctx: Context, first: str, second: str, release: str) -> str:
    """Delegates a holder; when its worker is lost, delegates another one."""
    try:
        held: str = await ctx.delegate(holder, first, release, on="pool:research")
    except GovernanceUnavailable as exc:
        if exc.check != "worker.lost":
            raise
        held = await ctx.delegate(holder, second, release, on="pool:research")
    return held


@agent(scopes={"notes:read"})
async def ticker(ctx: Context, marker: str) -> int:
    """Marks that it runs, then makes a governed tool call every 20 ms until stopped."""
    await ctx.call(mark, marker)
    ticks = 0
    while True:
        await ctx.call(lookup, "tick")
        ticks += 1
        await anyio.sleep(0.02)


@agent(scopes={"notes:read"})
async def delegates_ticker(ctx: Context, marker: str) -> int:
    ticks: int = await ctx.delegate(ticker, marker, on="pool:research")
    return ticks
