"""``tenure mcp-proxy`` as a client launches it: a real stdio MCP client → the proxy process →
a real stdio server process, revoked from a third process with ``tenure revoke``, traced
across all three through ``_meta``.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from tenure import SigningKey
from tenure.crypto import default_key_dir, load_public_key
from tenure.evidence import verify_run

from ..support.otlp_receiver import OTLPReceiver
from ..support.polling import until
from ._shared import POLICY
from .test_mcp_proxy import SERVER, _alive

TENURE = str(Path(sys.executable).with_name("tenure"))


def _text(result: types.CallToolResult) -> str:
    return " ".join(c.text for c in result.content if isinstance(c, types.TextContent))


class Proxy:
    def __init__(self, tmp: Path, session: ClientSession) -> None:
        self.tmp = tmp
        self.session = session
        self.evidence = tmp / "runs"
        self.marks = tmp / "marks.txt"
        self.log = tmp / "proxy.log"

    def marked(self) -> list[str]:
        return self.marks.read_text().splitlines() if self.marks.exists() else []

    def run_id(self) -> str:
        m = re.search(r"session run (run_[0-9a-f]+)", self.log.read_text())
        assert m is not None, self.log.read_text()
        return m.group(1)

    def run_dir(self) -> Path:
        return self.evidence / self.run_id()


def _command(tmp: Path, *extra: str) -> list[str]:
    policy = tmp / "policy.toml"
    policy.write_text(POLICY)
    return [
        "mcp-proxy",
        "--policy",
        str(policy),
        "--principal",
        "alice",
        "--evidence-dir",
        str(tmp / "runs"),
        *extra,
        "--",
        sys.executable,
        str(SERVER),
        str(tmp / "marks.txt"),
    ]


@asynccontextmanager
async def launched(
    tmp: Path, env: dict[str, str] | None = None, extra: tuple[str, ...] = ()
) -> AsyncIterator[Proxy]:
    """What an MCP client does with the proxy's entry in its configuration."""
    params = StdioServerParameters(
        command=TENURE, args=_command(tmp, *extra), env={**os.environ, **(env or {})}
    )
    with (tmp / "proxy.log").open("w") as log:
        async with (
            stdio_client(params, errlog=log) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            yield Proxy(tmp, session)


def _public_key() -> Any:
    return load_public_key(default_key_dir() / "tenure.pub")


async def test_the_proxy_process_governs_a_real_client_session(tmp_path: Path) -> None:
    async with launched(tmp_path) as p:
        tools = await p.session.list_tools()
        assert "read_file" in {t.name for t in tools.tools}
        ok = await p.session.call_tool("read_file", {"path": "x"})
        denied = await p.session.call_tool("delete_file", {"path": "x"})
        assert not ok.is_error and _text(ok) == "contents of x"
        assert denied.is_error and "no-delete" in _text(denied)
    assert p.marked() == ["read:x"]
    report = verify_run(p.run_dir(), _public_key())
    assert report.ok, report.failures
    assert "session ended; verify with" in p.log.read_text()


async def test_tenure_revoke_from_another_process_kills_the_server_mid_call(
    tmp_path: Path,
) -> None:
    async with launched(tmp_path) as p:
        results: list[types.CallToolResult] = []

        async def call() -> None:
            results.append(await p.session.call_tool("slow", {"seconds": 30}))

        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            await until(lambda: bool(p.marked()))
            pid = int(p.marked()[0].rsplit(":", 1)[1])
            revoke = await anyio.run_process(
                [
                    TENURE,
                    "revoke",
                    p.run_id(),
                    "--reason",
                    "incident 42",
                    "--evidence-dir",
                    str(p.evidence),
                ]
            )
            assert revoke.returncode == 0
        assert results[0].is_error and "LeaseRevoked" in _text(results[0])
        await until(lambda: not _alive(pid))
    assert p.marked() == [f"slow:start:{pid}"]
    log = p.log.read_text()
    assert "stopped: LeaseRevoked (lease.revoked): revoked: incident 42" in log
    records = [json.loads(x) for x in (p.run_dir() / "ledger.jsonl").read_text().splitlines()]
    revoked = next(r for r in records if r["kind"] == "lease.revoked")
    assert revoked["reason"] == "incident 42" and revoked["by"].startswith("request:")
    assert verify_run(p.run_dir(), _public_key()).ok


async def test_one_trace_runs_from_the_client_through_the_proxy_into_the_server(
    tmp_path: Path,
) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    client_spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(client_spans))
    tracer = provider.get_tracer("client")
    with OTLPReceiver() as rx:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": rx.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "50"}
        async with launched(tmp_path, env) as p:
            with tracer.start_as_current_span("client asks for read_file") as root:
                from opentelemetry import context, trace

                token = context.attach(trace.set_span_in_context(root))
                try:
                    await p.session.call_tool("read_file", {"path": "t"})
                finally:
                    context.detach(token)
        trace_id = f"{root.get_span_context().trace_id:032x}"
        spans = [s for s in rx.wait_for_spans(4, timeout=20) if s.trace_id == trace_id]
    by_name = {s.name: s for s in spans}
    governed = by_name["execute_tool read_file"]
    upstream = next(s for s in spans if s.resource.get("service.name") == "upstream")
    assert governed.attributes["tenure.framework"] == "mcp"
    chain = {s.span_id: s.parent_span_id for s in spans}
    # the upstream server's span descends from the governed step's span, in the client's trace
    cur = upstream.span_id
    ancestors = []
    while cur in chain:
        cur = chain[cur]
        ancestors.append(cur)
    assert governed.span_id in ancestors
    assert ancestors[-1] == f"{root.get_span_context().span_id:016x}"


def test_the_proxy_exits_1_with_one_line_when_the_policy_refuses_the_session(
    tmp_path: Path, key: SigningKey
) -> None:
    cmd = _command(tmp_path)
    (tmp_path / "policy.toml").write_text('version = 1\ndefault = "deny"\n')
    done = subprocess.run(
        [TENURE, *cmd], input="", capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""  # stdout is the MCP channel
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("tenure mcp-proxy: error")]
    assert "PolicyDenied (rule:default-deny)" in line and "mcp_proxy" in line


def usage_error(tmp: Path, *args: str) -> str:
    """The one stderr line of ``tenure mcp-proxy ARGS`` failing with exit code 2."""
    done = subprocess.run(
        [TENURE, "mcp-proxy", "--evidence-dir", str(tmp), *args],
        input="",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""  # stdout is the MCP channel
    lines = [x for x in done.stderr.splitlines() if x.strip()]
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "no server"),
        (["--tool-scope", "nope", "--", "true"], "expected TOOL=SCOPE"),
        (["--", "/no/such/server"], "cannot start the server '/no/such/server'"),
        (["--listen", "nowhere", "--", "true"], "--listen 'nowhere': expected HOST:PORT"),
        (["--listen", "127.0.0.1:99999", "--", "true"], "--listen '127.0.0.1:99999'"),
        (["--listen", "example.com:80", "--", "true"], "HOST must be an IP address"),
        (["--listen", "0.0.0.0:8765", "--", "true"], "needs --allow-remote"),
        (["--listen", "127.0.0.1:0", "--path", "mcp", "--", "true"], "--path 'mcp'"),
        (["--upstream", "ftp://example.com/mcp"], "--upstream 'ftp://example.com/mcp'"),
        (["--upstream", "http://127.0.0.1:1/mcp"], "no MCP server answered there"),
        (["--upstream", "http://127.0.0.1:1/mcp", "--", "true"], "not both"),
        (["--listen", "127.0.0.1:0", "--", "/no/such/server"], "cannot start the server"),
    ],
    ids=[
        "no-server",
        "bad-tool-scope",
        "missing-server",
        "listen-not-host-port",
        "listen-port-out-of-range",
        "listen-host-name",
        "listen-remote-without-flag",
        "relative-path",
        "upstream-not-http",
        "upstream-unreachable",
        "upstream-and-command",
        "listen-missing-server",
    ],
)
def test_usage_errors_exit_2_with_one_line_naming_the_value(
    tmp_path: Path, args: list[str], message: str
) -> None:
    assert message in usage_error(tmp_path, *args)


def test_a_port_in_use_exits_2_naming_the_listen_value(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        value = f"127.0.0.1:{taken.getsockname()[1]}"
        line = usage_error(tmp_path, "--listen", value, "--", "true")
    assert f"--listen {value!r}: cannot listen there" in line and "in use" in line
