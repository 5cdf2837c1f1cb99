"""An MCP tool call held for approval by ``tenure mcp-proxy --backend``, answered from
another process with ``tenure approvals``: a real stdio client → proxy → server, and a
real PostgreSQL board between the proxy and the approver."""

from __future__ import annotations

from pathlib import Path

import anyio
import mcp_types as types

from tenure.runtime.backends._pg import upgrade

from ..adapters.test_mcp_proxy_cli import TENURE, _text, launched
from ..support.approver import approver_key_file


async def _listed(url: str) -> list[str]:
    done = await anyio.run_process([TENURE, "approvals", "list", "--backend", url], check=False)
    assert done.returncode == 0, done.stderr.decode()
    return [x for x in done.stdout.decode().splitlines() if x.startswith("apr")]


async def test_a_held_mcp_call_runs_only_after_tenure_approvals_approve(
    tmp_path: Path, pg_url: str
) -> None:
    await upgrade(pg_url)
    async with launched(tmp_path, extra=("--backend", pg_url)) as p:
        results: list[types.CallToolResult] = []

        async def call() -> None:
            results.append(await p.session.call_tool("pay", {"amount": 30}))

        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            with anyio.fail_after(30):
                while not (lines := await _listed(pg_url)):  # noqa: ASYNC110 (another process)
                    await anyio.sleep(0.05)
            (line,) = lines
            assert " pay " in line and "pay-needs-a-human" in line
            assert p.marked() == [] and results == []  # held: the server has not seen it
            request_id = line.split()[0]
            key = approver_key_file(tmp_path)
            approve = [TENURE, "approvals", "approve", request_id, "--backend", pg_url]
            done = await anyio.run_process([*approve, "--key", str(key)], check=False)
            assert done.returncode == 0, done.stderr.decode()
        assert not results[0].is_error and _text(results[0]) == "paid 30"
    assert p.marked() == ["paid:30"]
