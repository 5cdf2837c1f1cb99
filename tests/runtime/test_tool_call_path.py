"""The governed tool call's fast path: an outright allow is decided and its ``step.start``
handed to the OS without a coroutine of its own, and still before the tool's body runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tenure import Context, Runtime, SigningKey, agent, tool
from tenure.evidence import verify_run
from tenure.policies import PolicySet

#: what each tool body found in the ledger file when it began (the test's observations)
_seen: list[list[dict[str, Any]]] = []
_ledger: list[Path] = []


def _on_disk() -> list[dict[str, Any]]:
    """The records the OS has received so far (read through a fresh descriptor)."""
    return [json.loads(line) for line in _ledger[0].read_bytes().splitlines()]


@tool
async def looks_at_ledger(i: int) -> int:
    _seen.append(_on_disk())
    return i * 2


@agent
async def three_calls(ctx: Context) -> list[int]:
    return [await ctx.call(looks_at_ledger, i) for i in range(3)]


def plain(i: int) -> int:
    return i


@agent
async def calls_a_plain_function(ctx: Context) -> str:
    try:
        await ctx.call(plain, 1)  # type: ignore[arg-type]
    except TypeError as exc:
        return str(exc)
    return "not refused"


async def test_each_tool_call_is_in_the_file_before_its_body_and_ends_after_it(
    allow_all: PolicySet, evidence: Path, key: SigningKey
) -> None:
    _seen.clear()
    _ledger.clear()
    async with Runtime(policies=allow_all, evidence_dir=evidence, key=key) as rt:
        handle = await rt.start(three_calls, principal="alice")
        _ledger.append(handle.evidence_path / "ledger.jsonl")
        assert await handle.result() == [0, 2, 4]
    assert len(_seen) == 3
    for i, seen in enumerate(_seen):
        starts = [r for r in seen if r["kind"] == "step.start" and r["action"] == "execute_tool"]
        # This call's own start (carrying its allow) had reached the OS when its body ran;
        # the earlier calls' ends were there too (they ride with the next start's write).
        assert len(starts) == i + 1
        assert starts[-1]["effect"] == "allow" and starts[-1]["decision"] == -1
        ends = {r["step"] for r in seen if r["kind"] == "step.end"}
        assert {s["step"] for s in starts[:-1]} <= ends
        assert starts[-1]["step"] not in ends
    report = verify_run(handle.evidence_path, key.public_key)
    assert report.ok, report


async def test_ctx_call_of_a_non_tool_is_refused_at_the_call_and_nothing_is_recorded(
    allow_all: PolicySet, evidence: Path, key: SigningKey
) -> None:
    async with Runtime(policies=allow_all, evidence_dir=evidence, key=key) as rt:
        handle = await rt.start(calls_a_plain_function, principal="alice")
        message = await handle.result()
    assert message.startswith("ctx.call expects a @tool, got <function plain")
    lines = (handle.evidence_path / "ledger.jsonl").read_bytes().splitlines()
    tool_steps = [
        r
        for r in map(json.loads, lines)
        if r["kind"] in ("step.start", "decision") and r.get("action") == "execute_tool"
    ]
    assert tool_steps == []
