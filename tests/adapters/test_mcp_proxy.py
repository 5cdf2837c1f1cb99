"""The governing MCP proxy, in process: a real MCP client session → proxy → a real stdio server.

The upstream is ``mcp_server.py`` run as the proxy's child process; every tool it runs
appends a mark to a file, so each test sees exactly which side effects happened.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import mcp_types as types
import pytest
from mcp import ClientSession
from mcp.shared.memory import create_client_server_memory_streams

from tenure import LeaseRevoked, RunHandle, Runtime, SigningKey
from tenure.adapters.mcp import McpProxy
from tenure.evidence import verify_run
from tenure.policies import PolicySet

from ..support.approver import APPROVER, next_request
from ..support.polling import until
from ._shared import POLICY, records

SERVER = Path(__file__).with_name("mcp_server.py")


def _text(result: types.CallToolResult) -> str:
    return " ".join(c.text for c in result.content if isinstance(c, types.TextContent))


class Harness:
    def __init__(self, rt: Runtime, proxy: McpProxy, session: ClientSession, marks: Path) -> None:
        self.rt = rt
        self.proxy = proxy
        self.session = session
        self.marks = marks

    def marked(self) -> list[str]:
        return self.marks.read_text().splitlines() if self.marks.exists() else []

    @property
    def handle(self) -> RunHandle:
        assert self.proxy.handle is not None
        return self.proxy.handle


@asynccontextmanager
async def proxied(evidence: Path, key: SigningKey, tmp_path: Path) -> AsyncIterator[Harness]:
    marks = tmp_path / "marks.txt"
    runtime = Runtime(policies=PolicySet.from_text(POLICY), evidence_dir=evidence, key=key)
    async with runtime as rt, create_client_server_memory_streams() as (client, server):
        proxy = McpProxy(rt, [sys.executable, str(SERVER), str(marks)], principal="alice")
        async with anyio.create_task_group() as tg:
            tg.start_soon(proxy.serve, *server)
            async with ClientSession(*client) as session:
                await session.initialize()
                yield Harness(rt, proxy, session, marks)
            await until(lambda: proxy.handle is not None and proxy.handle.done)


async def test_tools_list_passes_through_and_an_allowed_call_runs_with_evidence(
    evidence: Path, key: SigningKey, tmp_path: Path
) -> None:
    async with proxied(evidence, key, tmp_path) as h:
        listed = await h.session.list_tools()
        assert {t.name for t in listed.tools} == {"read_file", "delete_file", "pay", "slow", "wait"}
        result = await h.session.call_tool("read_file", {"path": "notes.txt"})
        assert not result.is_error and _text(result) == "contents of notes.txt"
        assert h.marked() == ["read:notes.txt"]
    assert await h.handle.result() == {
        "server": f"{sys.executable} {SERVER} {h.marks}",
        "tool_calls": 1,
    }
    recs = records(h.handle.evidence_path)
    start = next(r for r in recs if r["kind"] == "step.start" and r["target"] == "read_file")
    assert (start["framework"], start["action"]) == ("mcp", "execute_tool")
    assert next(r for r in recs if r["kind"] == "run.end")["status"] == "ok"
    report = verify_run(h.handle.evidence_path, key.public_key)
    assert report.ok, report.failures


async def test_a_denied_call_never_reaches_the_server_and_the_model_sees_the_rule(
    evidence: Path, key: SigningKey, tmp_path: Path
) -> None:
    async with proxied(evidence, key, tmp_path) as h:
        result = await h.session.call_tool("delete_file", {"path": "/etc/passwd"})
        assert result.is_error
        assert "Denied by Tenure (no-delete)" in _text(result)
        assert "delete_file was not run" in _text(result)
        after = await h.session.call_tool("read_file", {"path": "a"})  # the session goes on
        assert not after.is_error
    assert h.marked() == ["read:a"]
    recs = records(h.handle.evidence_path)
    denied = [r for r in recs if r["kind"] == "decision" and r["target"] == "delete_file"]
    assert [(d["effect"], d["rule"]) for d in denied] == [("deny", "no-delete")]
    assert not [r for r in recs if r["kind"] == "step.start" and r["target"] == "delete_file"]
    assert verify_run(h.handle.evidence_path, key.public_key).ok


async def test_an_approval_held_call_waits_and_runs_only_after_the_grant(
    evidence: Path, key: SigningKey, tmp_path: Path
) -> None:
    async with proxied(evidence, key, tmp_path) as h:
        results: list[types.CallToolResult] = []

        async def call() -> None:
            results.append(await h.session.call_tool("pay", {"amount": 30}))

        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            request = await next_request(h.rt)
            assert (request.target, request.rule_id) == ("pay", "pay-needs-a-human")
            assert h.marked() == [] and results == []  # held: the server has not seen it
            h.rt.approve(request.id, approver=APPROVER)
        assert not results[0].is_error and _text(results[0]) == "paid 30"
        assert h.marked() == ["paid:30"]
    recs = records(h.handle.evidence_path)
    granted = next(r for r in recs if r["kind"] == "approval.granted")
    start = next(r for r in recs if r["kind"] == "step.start" and r["target"] == "pay")
    assert start["approval"] == granted["i"]
    assert verify_run(h.handle.evidence_path, key.public_key).ok


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_revoking_mid_call_kills_the_server_and_the_run_ends_with_the_violation(
    evidence: Path, key: SigningKey, tmp_path: Path
) -> None:
    async with proxied(evidence, key, tmp_path) as h:
        results: list[types.CallToolResult] = []

        async def call() -> None:
            results.append(await h.session.call_tool("slow", {"seconds": 30}))

        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            await until(lambda: bool(h.marked()))
            pid = int(h.marked()[0].rsplit(":", 1)[1])
            h.rt.revoke(h.handle.run_id, reason="operator pulled the plug")
        assert results[0].is_error
        assert "Tenure stopped this session (LeaseRevoked" in _text(results[0])
        await until(lambda: not _alive(pid))
        later = await h.session.call_tool("read_file", {"path": "b"})
        assert later.is_error and "no further tool call will run" in _text(later)
    assert h.marked() == [f"slow:start:{pid}"]  # killed before it could finish
    with pytest.raises(LeaseRevoked):
        await h.handle.result()
    recs = records(h.handle.evidence_path)
    assert next(r for r in recs if r["kind"] == "run.end")["status"] == "violation"
    slow = next(r for r in recs if r["kind"] == "step.start" and r["target"] == "slow")
    assert any(slow["step"] in r["steps"] for r in recs if r["kind"] == "steps.stopped")
    report = verify_run(h.handle.evidence_path, key.public_key)
    assert report.ok, report.failures
