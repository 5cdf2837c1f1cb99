"""Governed calls are turns of the event loop: CPU-only tools never starve governance."""

from __future__ import annotations

from pathlib import Path

from tenure import Context, Runtime, SigningKey, agent, tool
from tenure.policies import PolicySet


@tool
async def add_one(i: int) -> int:
    return i + 1  # never awaits


@agent
async def counter(ctx: Context, n: int) -> int:
    total = 0
    for _ in range(n):
        total = await ctx.call(add_one, total)
    return total


async def test_a_long_chain_of_non_awaiting_tool_calls_is_not_a_loop_stall(
    allow_all: PolicySet, evidence: Path
) -> None:
    """60,000 calls of a tool that never awaits, at the default ``stall_bound`` (1 s): the
    loop still turns, no breach. Without the runtime's own yields the chain would hold the
    loop for seconds (30-60 µs a call); a tighter bound only measured the machine's load."""
    async with Runtime(
        policies=allow_all, evidence_dir=evidence, key=SigningKey.generate(), fsync="never"
    ) as rt:
        assert await rt.run(counter, 60_000, principal="alice", ttl=120) == 60_000
        assert rt._stall is not None and rt._stall.breaches == 0
