"""The agents of the cluster demo: a planner that sends researchers to a pool of workers.

Both sides import this module: the process that starts the run (``main.py``) and every
``tenure worker --agents examples/distributed/team.py --pool research``. A delegation pins
the agent's code digest, so a worker running different code refuses the task.
"""

from __future__ import annotations

import anyio

from tenure import Context, agent, tool

LIBRARY = {
    "governed execution": "every step runs under a signed, short-lived lease",
    "fail closed": "a broken condition stops the whole run and the stop is recorded",
    "evidence": "a signed, Merkle-chained ledger a third party verifies offline",
}


@tool(scopes={"library:read"})
async def read_notes(topic: str) -> str:
    """What the (simulated) library holds on ``topic``."""
    await anyio.sleep(0.05)
    return LIBRARY.get(topic, "nothing on file")


@agent(scopes={"library:read"})
async def researcher(ctx: Context, topic: str) -> dict[str, str]:
    """Runs on a worker of pool ``research``: looks the topic up, returns a finding."""
    notes: str = await ctx.call(read_notes, topic)
    return {"topic": topic, "finding": notes}


@agent(scopes={"library:read"})
async def planner(ctx: Context, topics: list[str]) -> list[dict[str, str]]:
    """Fans the topics out to the pool and collects the findings in order."""
    async with ctx.parallel() as p:
        for topic in topics:
            p.start(researcher, topic, on="pool:research")
    return list(p.results)


@agent(scopes={"library:read"})
async def watcher(ctx: Context, topic: str) -> str:
    """Runs on a worker until it is stopped: reads the notes again and again."""
    while True:
        await ctx.call(read_notes, topic)
        await anyio.sleep(0.2)


@agent(scopes={"library:read"})
async def long_study(ctx: Context, topic: str) -> str:
    """Keeps a worker busy with ``watcher`` until the run is revoked."""
    result: str = await ctx.delegate(watcher, topic, on="pool:research")
    return result
