"""``tenure mcp-proxy --listen`` over Streamable HTTP, all real and on loopback: the SDK's
Streamable HTTP client → a ``tenure mcp-proxy --listen`` process → the test server as the
proxy's child over stdio (one per session). Revoked and approved from other processes with
the ``tenure`` CLI. ``--upstream`` (an HTTP server) is in ``test_mcp_proxy_upstream.py``.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from anyio.abc import Process
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tenure.evidence import verify_run

from ..support.approver import approver_key_file
from ..support.otlp_receiver import OTLPReceiver
from ..support.polling import until
from ._shared import POLICY, records
from .test_mcp_proxy import SERVER, _alive
from .test_mcp_proxy_cli import TENURE, _public_key, _text


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


class Proxy:
    """A running ``tenure mcp-proxy --listen`` process and what it wrote."""

    def __init__(self, tmp: Path, process: Process, url: str) -> None:
        self.tmp = tmp
        self.process = process
        self.url = url
        self.evidence = tmp / "runs"
        self.marks = tmp / "marks.txt"
        self.log = tmp / "proxy.log"

    def marked(self) -> list[str]:
        return _lines(self.marks)

    def run_ids(self) -> list[str]:
        return re.findall(r"session run (run_[0-9a-f]+), evidence", self.log.read_text())

    def ended(self) -> list[str]:
        return re.findall(r"session run (run_[0-9a-f]+) ended", self.log.read_text())


def _proxy_args(tmp: Path, *, policy_text: str = POLICY, listen: bool = True) -> list[str]:
    policy = tmp / "policy.toml"
    policy.write_text(policy_text)
    return [
        TENURE,
        "mcp-proxy",
        "--policy",
        str(policy),
        "--principal",
        "alice",
        "--evidence-dir",
        str(tmp / "runs"),
        *(["--listen", "0"] if listen else []),  # a bare port: loopback, any free one
    ]


CHILD = ("--", sys.executable, str(SERVER))


@asynccontextmanager
async def listening(
    tmp: Path, *upstream: str, policy: str = POLICY, env: dict[str, str] | None = None
) -> AsyncIterator[Proxy]:
    """The proxy serving HTTP; stopped with SIGTERM at the end (it must exit 0)."""
    args = [*_proxy_args(tmp, policy_text=policy), *upstream]
    if upstream == CHILD:
        args.append(str(tmp / "marks.txt"))
    log = tmp / "proxy.log"
    with log.open("w") as err:
        process = await anyio.open_process(
            args, stdout=err, stderr=err, env={**os.environ, **(env or {})}
        )
    try:
        await until(lambda: "serving MCP" in log.read_text() or process.returncode is not None)
        m = re.search(r"serving MCP \(Streamable HTTP\) on (\S+)", log.read_text())
        assert m is not None, log.read_text()
        yield Proxy(tmp, process, m.group(1))
        process.send_signal(signal.SIGTERM)
        with anyio.fail_after(30):
            assert await process.wait() == 0, log.read_text()
        assert "tenure mcp-proxy: stopped" in log.read_text()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@asynccontextmanager
async def client(url: str) -> AsyncIterator[ClientSession]:
    async with streamable_http_client(url) as (read, write), ClientSession(read, write) as s:
        await s.initialize()
        yield s


async def _revoke(p: Proxy, run_id: str) -> None:
    done = await anyio.run_process(
        [TENURE, "revoke", run_id, "--reason", "incident 7", "--evidence-dir", str(p.evidence)],
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()


def _verified(p: Proxy, run_id: str) -> None:
    report = verify_run(p.evidence / run_id, _public_key())
    assert report.ok, report.failures


async def test_an_http_client_is_governed_and_its_session_is_one_verified_run(
    tmp_path: Path,
) -> None:
    async with listening(tmp_path, *CHILD) as p:
        assert p.url.startswith("http://127.0.0.1:") and p.url.endswith("/mcp")
        async with client(p.url) as s:
            tools = await s.list_tools()
            assert "read_file" in {t.name for t in tools.tools}
            ok = await s.call_tool("read_file", {"path": "x"})
            denied = await s.call_tool("delete_file", {"path": "/etc/passwd"})
            assert not ok.is_error and _text(ok) == "contents of x"
            assert denied.is_error and "Denied by Tenure (no-delete)" in _text(denied)
        (run_id,) = p.run_ids()
        await until(lambda: p.ended() == [run_id])  # the client's DELETE ended the run
    assert p.marked() == ["read:x"]  # the denied call never reached the server
    recs = records(p.evidence / run_id)
    assert [r["target"] for r in recs if r["kind"] == "step.start"][-1] == "read_file"
    assert next(r for r in recs if r["kind"] == "run.end")["status"] == "ok"
    _verified(p, run_id)
    log = p.log.read_text()
    assert f"verify with: tenure verify {p.evidence / run_id}" in log


async def test_revoking_one_http_session_kills_its_server_mid_call_and_spares_the_other(
    tmp_path: Path,
) -> None:
    async with listening(tmp_path, *CHILD) as p, client(p.url) as first:
        await until(lambda: len(p.run_ids()) == 1)
        (first_run,) = p.run_ids()
        async with client(p.url) as second:
            await until(lambda: len(p.run_ids()) == 2)
            results: list[types.CallToolResult] = []

            async def call() -> None:
                results.append(await first.call_tool("slow", {"seconds": 30}))

            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                await until(lambda: any(m.startswith("slow:start") for m in p.marked()))
                pid = int(p.marked()[-1].rsplit(":", 1)[1])
                await _revoke(p, first_run)
            assert results[0].is_error and "LeaseRevoked" in _text(results[0])
            await until(lambda: not _alive(pid))  # the hard stop: that session's server
            later = await first.call_tool("read_file", {"path": "a"})
            assert later.is_error and "no further tool call will run" in _text(later)
            other = await second.call_tool("read_file", {"path": "b"})
            assert not other.is_error and _text(other) == "contents of b"
    assert "slow:end" not in p.marked() and "read:a" not in p.marked()
    assert "read:b" in p.marked()
    assert f"run {first_run} stopped: LeaseRevoked (lease.revoked)" in p.log.read_text()
    recs = records(p.evidence / first_run)
    assert next(r for r in recs if r["kind"] == "run.end")["status"] == "violation"
    for run_id in p.run_ids():
        _verified(p, run_id)


async def _listed(p: Proxy) -> list[str]:
    cmd = [TENURE, "approvals", "list", "--evidence-dir", str(p.evidence)]
    done = await anyio.run_process(cmd, check=False)
    assert done.returncode == 0, done.stderr.decode()
    return [x for x in done.stdout.decode().splitlines() if x.startswith("apr")]


async def test_one_trace_runs_from_the_http_client_through_the_proxy_into_the_server(
    tmp_path: Path,
) -> None:
    from opentelemetry import context, trace
    from opentelemetry.sdk.trace import TracerProvider

    root = TracerProvider().get_tracer("client").start_span("client asks for read_file")
    with OTLPReceiver() as rx:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": rx.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "50"}
        async with listening(tmp_path, *CHILD, env=env) as p, client(p.url) as s:
            token = context.attach(trace.set_span_in_context(root))
            try:
                await s.call_tool("read_file", {"path": "t"})
            finally:
                context.detach(token)
                root.end()
        trace_id = f"{root.get_span_context().trace_id:032x}"
        spans = [s for s in rx.wait_for_spans(4, timeout=20) if s.trace_id == trace_id]
    governed = next(s for s in spans if s.name == "execute_tool read_file")
    upstream = next(s for s in spans if s.resource.get("service.name") == "upstream")
    assert governed.attributes["tenure.framework"] == "mcp"
    chain = {s.span_id: s.parent_span_id for s in spans}
    cur, ancestors = upstream.span_id, []
    while cur in chain:
        cur = chain[cur]
        ancestors.append(cur)
    assert governed.span_id in ancestors  # the server's span descends from the governed step
    assert ancestors[-1] == f"{root.get_span_context().span_id:016x}"  # in the client's trace


async def test_a_held_http_call_runs_only_after_tenure_approvals_approve(tmp_path: Path) -> None:
    async with listening(tmp_path, *CHILD) as p, client(p.url) as s:
        results: list[types.CallToolResult] = []

        async def call() -> None:
            results.append(await s.call_tool("pay", {"amount": 30}))

        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            with anyio.fail_after(30):
                while not (lines := await _listed(p)):  # noqa: ASYNC110 (another process)
                    await anyio.sleep(0.05)
            (line,) = lines
            assert " pay " in line and "pay-needs-a-human" in line
            assert p.marked() == [] and results == []  # held: the server has not seen it
            approve = [TENURE, "approvals", "approve", line.split()[0]]
            key = approver_key_file(tmp_path)
            done = await anyio.run_process(
                [*approve, "--key", str(key), "--evidence-dir", str(p.evidence)], check=False
            )
            assert done.returncode == 0, done.stderr.decode()
        assert not results[0].is_error and _text(results[0]) == "paid 30"
    assert p.marked() == ["paid:30"]
    (run_id,) = p.run_ids()
    granted = [r for r in records(p.evidence / run_id) if r["kind"] == "approval.granted"]
    assert len(granted) == 1
    _verified(p, run_id)


async def test_a_session_whose_server_died_fails_its_calls_and_the_proxy_serves_on(
    tmp_path: Path,
) -> None:
    async with listening(tmp_path, *CHILD) as p:
        async with client(p.url) as broken:
            failed: list[bool] = []

            async def fails(name: str, args: dict[str, Any]) -> None:
                try:
                    failed.append((await broken.call_tool(name, args)).is_error)
                except MCPError:
                    failed.append(True)

            async with anyio.create_task_group() as tg:
                tg.start_soon(fails, "slow", {"seconds": 30})
                await until(lambda: bool(p.marked()))
                pid = int(p.marked()[0].rsplit(":", 1)[1])
                os.kill(pid, signal.SIGKILL)  # the server crashes mid-call
            await fails("read_file", {"path": "gone"})
            assert failed == [True, True]
        async with client(p.url) as fresh:  # a new session gets a new server
            ok = await fresh.call_tool("read_file", {"path": "again"})
            assert not ok.is_error and _text(ok) == "contents of again"
        await until(lambda: len(p.ended()) == 2)
    assert "read:gone" not in p.marked() and "read:again" in p.marked()
    for run_id in p.run_ids():
        _verified(p, run_id)


async def test_a_session_the_policy_refuses_fails_initialize_with_the_reason(
    tmp_path: Path,
) -> None:
    deny_all = 'version = 1\ndefault = "deny"\n'
    async with listening(tmp_path, *CHILD, policy=deny_all) as p:
        with pytest.raises(BaseException) as caught:  # the SDK's task groups wrap it
            async with client(p.url):
                pass
        leaf = caught.value
        while isinstance(leaf, BaseExceptionGroup):
            leaf = leaf.exceptions[0]
        assert isinstance(leaf, MCPError), caught.value
        assert "Tenure could not open this session: PolicyDenied (rule:default-deny)" in str(leaf)
        assert "session failed: PolicyDenied" in p.log.read_text()
    assert p.marked() == []


async def test_requests_that_are_not_a_governed_session_are_refused_and_spawn_nothing(
    tmp_path: Path,
) -> None:
    """DNS rebinding (a foreign Host), a sessionless protocol era, a stray POST, a guessed
    session id, a wrong path: each refused with its reason; no run starts, no server runs."""
    import httpx

    json_rpc = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "x", "version": "1"},
        },
    }
    async with listening(tmp_path, *CHILD) as p, httpx.AsyncClient() as http:
        rebound = await http.post(
            p.url, json=initialize, headers={**json_rpc, "host": "evil.example:80"}
        )
        assert rebound.status_code == 421
        foreign = await http.post(
            p.url, json=initialize, headers={**json_rpc, "origin": "http://evil.example"}
        )
        assert foreign.status_code == 403
        modern = await http.post(
            p.url, json=initialize, headers={**json_rpc, "mcp-protocol-version": "2026-07-28"}
        )
        assert modern.status_code == 400 and "serves MCP sessions" in modern.text
        stray = await http.post(
            p.url, json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, headers=json_rpc
        )
        assert stray.status_code == 400 and "Missing session ID" in stray.text
        guessed = await http.post(
            p.url, json=initialize, headers={**json_rpc, "mcp-session-id": "0" * 32}
        )
        assert guessed.status_code == 404
        elsewhere = await http.post(
            p.url.replace("/mcp", "/other"), json=initialize, headers=json_rpc
        )
        assert elsewhere.status_code == 404 and "served at /mcp" in elsewhere.text
        assert p.run_ids() == [] and p.marked() == []
        async with client(p.url) as s:  # a real session still opens after all that
            assert not (await s.call_tool("read_file", {"path": "z"})).is_error
    assert p.marked() == ["read:z"]
