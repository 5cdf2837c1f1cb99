"""``tenure mcp-proxy --upstream URL``: the server is a FastMCP server over Streamable HTTP
under uvicorn on loopback (no child to kill), reached from an HTTP client through
``--listen`` and from a stdio client.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import mcp_types as types
from mcp import ClientSession

from tenure.evidence import verify_run

from ..support.polling import until
from ._shared import records
from .test_mcp_proxy import SERVER
from .test_mcp_proxy_cli import TENURE, _public_key, _text
from .test_mcp_proxy_http import _lines, _proxy_args, _revoke, _verified, client, listening


@asynccontextmanager
async def http_server(tmp: Path) -> AsyncIterator[str]:
    """The test server over Streamable HTTP (FastMCP under uvicorn); its URL."""
    url_file = tmp / "upstream.url"
    process = await anyio.open_process(
        [sys.executable, str(SERVER), str(tmp / "marks.txt"), "--http", str(url_file)],
        stdout=None,
        stderr=None,
    )
    try:
        await until(url_file.exists)
        yield url_file.read_text()
    finally:
        process.terminate()
        with anyio.fail_after(15):
            await process.wait()


async def test_an_http_upstream_is_governed_like_a_child_server(tmp_path: Path) -> None:
    async with http_server(tmp_path) as upstream, listening(tmp_path, "--upstream", upstream) as p:
        async with client(p.url) as s:
            ok = await s.call_tool("read_file", {"path": "r"})
            denied = await s.call_tool("delete_file", {"path": "r"})
            assert not ok.is_error and _text(ok) == "contents of r"
            assert denied.is_error and "no-delete" in _text(denied)
        (run_id,) = p.run_ids()
        await until(lambda: p.ended() == [run_id])
    assert p.marked() == ["read:r"]
    recs = records(p.evidence / run_id)
    assert [r["target"] for r in recs if r["kind"] == "step.start"][-1] == "read_file"
    _verified(p, run_id)


async def test_revoking_mid_call_to_an_http_upstream_cancels_it_and_forwards_nothing_more(
    tmp_path: Path,
) -> None:
    async with (
        http_server(tmp_path) as upstream,
        listening(tmp_path, "--upstream", upstream) as p,
        client(p.url) as s,
    ):
        results: list[types.CallToolResult] = []

        async def call() -> None:
            results.append(await s.call_tool("wait", {"seconds": 30}))

        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            await until(lambda: "wait:start" in p.marked())
            (run_id,) = p.run_ids()
            await _revoke(p, run_id)
        assert results[0].is_error and "LeaseRevoked" in _text(results[0])
        await until(lambda: "wait:cancelled" in p.marked())  # the remote call was cancelled
        later = await s.call_tool("read_file", {"path": "late"})
        assert later.is_error and "no further tool call will run" in _text(later)
    assert p.marked() == ["wait:start", "wait:cancelled"]
    assert f"run {run_id} stopped: LeaseRevoked" in p.log.read_text()
    _verified(p, run_id)


async def test_a_stdio_client_is_governed_in_front_of_an_http_upstream(tmp_path: Path) -> None:
    from mcp.client.stdio import StdioServerParameters, stdio_client

    async with http_server(tmp_path) as upstream:
        args = [*_proxy_args(tmp_path, listen=False)[1:], "--upstream", upstream]
        params = StdioServerParameters(command=TENURE, args=args, env=dict(os.environ))
        log = tmp_path / "proxy.log"
        with log.open("w") as err:
            async with (
                stdio_client(params, errlog=err) as (read, write),
                ClientSession(read, write) as s,
            ):
                await s.initialize()
                ok = await s.call_tool("read_file", {"path": "s"})
                denied = await s.call_tool("delete_file", {"path": "s"})
        assert not ok.is_error and denied.is_error and "no-delete" in _text(denied)
    assert _lines(tmp_path / "marks.txt") == ["read:s"]
    m = re.search(r"verify with: tenure verify (\S+)", log.read_text())
    assert m is not None, log.read_text()
    assert verify_run(Path(m.group(1)), _public_key()).ok
