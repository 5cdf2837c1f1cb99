"""A step's start and its debit are one commit, whatever happens to it on the way.

Each test runs a real runtime on an in-process backend whose commit of one step's start
fails in one way: the acknowledgement is lost after the commit landed, the commit never
reached the backend, a refusal's acknowledgement is lost, or no answer comes before this
process's authority ends. Every time: a step runs only when its start and its debit are
both committed, the debit is taken once, and the run's directory and its segment hold the
same records — or, when the backend kept a start this process never heard of, the segment
ends there rather than forking the chain.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from tenure import (
    Context,
    GovernanceUnavailable,
    GovernanceViolation,
    PolicyDenied,
    Runtime,
    RuntimeConfig,
    agent,
    tool,
)
from tenure.evidence import verify_run
from tenure.runtime.backends import Batch, Debit, Member, MemoryBackend, Refusal
from tenure.runtime.backends._segment import NOT_STARTED_RULE

ALLOW = 'version = 1\ndefault = "deny"\n\n[[rules]]\nid = "all"\neffect = "allow"\n'
FAST = RuntimeConfig(liveness_ttl=1.5, liveness_margin=0.3, liveness_interval=0.25)

ran: list[int] = []


@tool
async def count(n: int) -> int:
    ran.append(n)
    return n


@agent
async def counting(ctx: Context, calls: int) -> int:
    for n in range(calls):
        await ctx.call(count, n)
    return calls


def _unreachable() -> GovernanceUnavailable:
    return GovernanceUnavailable("connection lost", check="backend.unreachable", source="backend")


class FaultyBackend(MemoryBackend):
    """An in-process backend whose commit of the ``nth`` tool call's start misbehaves."""

    def __init__(self, fault: str, nth: int = 3) -> None:
        super().__init__()
        self.fault = fault
        self.nth = nth
        self.starts = 0
        self.commits = 0

    async def commit(
        self, member: Member, batch: Batch, debit: Debit | None = None
    ) -> Refusal | None:
        self.commits += 1
        if debit is None or "tool_calls" not in debit.amounts:
            return await super().commit(member, batch, debit)
        self.starts += 1
        if self.starts != self.nth:
            return await super().commit(member, batch, debit)
        if self.fault == "never-arrives":
            raise _unreachable()
        await super().commit(member, batch, debit)
        if self.fault == "hang":
            await anyio.sleep_forever()
        raise _unreachable()  # "ack-lost": it landed, the answer did not come back


def _policy(tmp_path: Path, budgets: str) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(ALLOW + "\n[budgets]\n" + budgets)
    return path


async def _run(
    tmp_path: Path, backend: FaultyBackend, budgets: str, calls: int
) -> tuple[Any, BaseException | None, Path, list[bytes]]:
    ran.clear()
    policy = _policy(tmp_path, budgets)
    async with Runtime(
        backend=backend, evidence_dir=tmp_path / "runs", policies=policy, config=FAST
    ) as rt:
        handle = await rt.start(counting, calls, principal="alice", ttl=30)
        result: Any = None
        error: GovernanceViolation | None = None
        try:
            with anyio.fail_after(20):
                result = await handle.result()
        except GovernanceViolation as exc:
            error = exc
    lines, _ = await backend.records(handle.run_id)
    return result, error, handle.evidence_path, lines


def _local(run_dir: Path) -> list[bytes]:
    return (run_dir / "ledger.jsonl").read_bytes().splitlines(keepends=True)


def _kinds(lines: list[bytes], kind: str, where: Callable[[dict[str, Any]], bool]) -> int:
    return sum(1 for r in map(json.loads, lines) if r["kind"] == kind and where(r))


def _tool_start(r: dict[str, Any]) -> bool:
    return bool(r["action"] == "execute_tool")


async def test_a_start_whose_acknowledgement_was_lost_runs_once_and_is_debited_once(
    tmp_path: Path,
) -> None:
    backend = FaultyBackend("ack-lost")
    result, error, run_dir, segment = await _run(tmp_path, backend, "max_tool_calls = 10\n", 5)
    assert error is None and result == 5
    assert ran == [0, 1, 2, 3, 4]
    assert await backend.used(run_dir.name) == {"steps": 6, "tool_calls": 5}
    assert segment == _local(run_dir)
    assert _kinds(segment, "step.start", _tool_start) == 5
    assert verify_run(run_dir).verdict == "verified"


async def test_a_start_that_never_reached_the_backend_is_sent_once_more(tmp_path: Path) -> None:
    backend = FaultyBackend("never-arrives")
    result, error, run_dir, segment = await _run(tmp_path, backend, "max_tool_calls = 10\n", 5)
    assert error is None and result == 5
    assert ran == [0, 1, 2, 3, 4]
    assert backend.starts == 6  # the third sent twice, taken once
    assert await backend.used(run_dir.name) == {"steps": 6, "tool_calls": 5}
    assert segment == _local(run_dir)
    assert verify_run(run_dir).verdict == "verified"


async def test_a_refusal_decided_elsewhere_and_lost_on_the_way_back_still_stops_the_run(
    tmp_path: Path,
) -> None:
    """Another process spent the run's budget; this one's third start is refused by the
    backend and the refusal's acknowledgement is lost. Read back, the backend kept the
    not-started record: the step does not run, the run stops, both copies agree."""
    backend = FaultyBackend("ack-lost")
    ran.clear()
    policy = _policy(tmp_path, "max_tool_calls = 3\n")
    gate = anyio.Event()

    @agent
    async def waits(ctx: Context) -> int:
        await gate.wait()
        for n in range(5):
            await ctx.call(count, n)
        return 5

    async with Runtime(
        backend=backend, evidence_dir=tmp_path / "runs", policies=policy, config=FAST
    ) as rt:
        handle = await rt.start(waits, principal="alice", ttl=30)
        other = await backend.register("elsewhere", None, 30, {})
        assert await backend.debit(other, Debit(handle.run_id, {"tool_calls": 1})) is None
        gate.set()
        with anyio.fail_after(20), pytest.raises(PolicyDenied) as caught:
            await handle.result()
    lines, _ = await backend.records(handle.run_id)
    assert caught.value.check == "budget.shared"  # its reason was lost, not its verdict
    assert ran == [0, 1]
    assert lines == _local(handle.evidence_path)
    assert _kinds(lines, "decision", lambda r: r["rule"] == NOT_STARTED_RULE) == 1
    assert await backend.used(handle.run_id) == {"steps": 3, "tool_calls": 3}
    assert verify_run(handle.evidence_path).verdict == "verified"


async def test_a_start_unanswered_until_the_authority_ends_does_not_run_and_the_segment_ends(
    tmp_path: Path,
) -> None:
    """The backend took the third start (and its debit) but its answer never comes. When
    this process's authority ends the step has not run and is recorded here as not started;
    the backend holds the start, so nothing more is shipped to that segment: it ends there
    (a prefix that verifies as cut short), never a forked chain."""
    backend = FaultyBackend("hang")
    result, error, run_dir, segment = await _run(tmp_path, backend, "max_tool_calls = 10\n", 5)
    assert result is None
    assert isinstance(error, GovernanceUnavailable) and error.check == "evidence.segment"
    assert ran == [0, 1]
    local = _local(run_dir)
    index = len(segment) - 1
    assert local[:index] == segment[:index]
    assert json.loads(segment[index])["kind"] == "step.start"
    not_started = json.loads(local[index])
    assert (not_started["kind"], not_started["rule"]) == ("decision", NOT_STARTED_RULE)
    assert verify_run(run_dir).verdict == "verified"
