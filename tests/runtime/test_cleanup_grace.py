"""Stops during real I/O: cleanup runs, bounded by ``cleanup_grace``; errors come out plain.

The shielded-sleep tool is exactly what httpcore does to close a connection; the httpx
tests use a real client against a loopback server that accepts and never answers.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx
import pytest

from tenure import (
    Context,
    GovernanceUnavailable,
    LeaseExpired,
    LeaseRevoked,
    Runtime,
    SigningKey,
    agent,
    tool,
)
from tenure.evidence import verify_run
from tenure.policies import PolicySet
from tests.support.evidence import decisions

KEY = SigningKey.generate()


def _runtime(policy: PolicySet, evidence: Path, **kw: Any) -> Runtime:
    return Runtime(policies=policy, evidence_dir=evidence, key=KEY, **kw)


def _records(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / "ledger.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def _outcomes(run_dir: Path) -> list[str]:
    return [r["outcome"] for r in _records(run_dir) if r["kind"] == "steps.stopped"]


def _uncooperative(run_dir: Path) -> list[dict[str, Any]]:
    return [r for r in _records(run_dir) if r.get("check") == "task.uncooperative"]


class _Cleanup:
    """What the tools under test saw: entered, cleaned up (finally finished)."""

    def __init__(self) -> None:
        self.entered = anyio.Event()
        self.cleaned = False


@asynccontextmanager
async def _stopping(
    policy: PolicySet, evidence: Path, body: Any, *, ttl: float = 30, **kw: Any
) -> AsyncIterator[tuple[Runtime, Any]]:
    async with _runtime(policy, evidence, **kw) as rt:
        handle = await rt.start(body, principal="alice", ttl=ttl)
        yield rt, handle


async def test_tool_doing_shielded_cleanup_is_cleaned_up_on_revoke_and_the_runtime_exits(
    allow_all: PolicySet, evidence: Path
) -> None:
    """The minimal httpcore case: ``finally`` awaits in a shielded scope. It completes, the
    step's end is recorded as cleaned, and leaving ``async with Runtime()`` is clean."""
    seen = _Cleanup()

    @tool
    async def fetch() -> str:
        seen.entered.set()
        try:
            await anyio.sleep(30)
            return "unreachable"
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.sleep(0.01)
            seen.cleaned = True

    @agent
    async def caller(ctx: Context) -> str:
        result: str = await ctx.call(fetch)
        return result

    async with _stopping(allow_all, evidence, caller) as (rt, handle):
        await seen.entered.wait()
        rt.revoke(handle.run_id, reason="operator")
        with pytest.raises(LeaseRevoked):
            await handle.result()
    assert seen.cleaned
    assert set(_outcomes(handle.evidence_path)) == {"cleaned"}
    assert _uncooperative(handle.evidence_path) == []
    assert verify_run(handle.evidence_path, KEY.public_key).ok


async def test_tool_doing_shielded_cleanup_is_cleaned_up_on_ttl_expiry(
    allow_all: PolicySet, evidence: Path
) -> None:
    """The same at the run's ttl: ``LeaseExpired``, the cleanup ran, a clean exit."""
    seen = _Cleanup()

    @tool
    async def fetch() -> None:
        seen.entered.set()
        try:
            await anyio.sleep(30)
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.sleep(0.01)
            seen.cleaned = True

    @agent
    async def caller(ctx: Context) -> None:
        await ctx.call(fetch)

    async with _stopping(allow_all, evidence, caller, ttl=0.3) as (_rt, handle):
        with pytest.raises(LeaseExpired):
            await handle.result()
    assert seen.cleaned
    assert set(_outcomes(handle.evidence_path)) == {"cleaned"}
    assert _uncooperative(handle.evidence_path) == []


@tool(scopes={"llm"})
async def ask_model(url: str) -> str:
    """A real httpx request to a (fake, local) model endpoint."""
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.post(url, json={"prompt": "hello"})
        return response.text


@agent(scopes={"llm"})
async def chat(ctx: Context, url: str) -> str:
    """Asks the model once."""
    answer: str = await ctx.call(ask_model, url)
    return answer


class _SilentServer:
    """A loopback HTTP server that reads each request and never answers."""

    def __init__(self) -> None:
        self.requested = anyio.Event()
        self.url = ""

    async def _handle(self, stream: Any) -> None:
        async with stream:
            try:
                await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return  # the client gave up before its request was sent
            self.requested.set()
            await anyio.sleep_forever()


@asynccontextmanager
async def _silent_server() -> AsyncIterator[_SilentServer]:
    server = _SilentServer()
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    server.url = f"http://127.0.0.1:{port}/v1/chat"
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, server._handle)
        try:
            yield server
        finally:
            tg.cancel_scope.cancel()


async def test_httpx_request_to_a_silent_loopback_server_is_cleaned_up_on_revoke(
    allow_all: PolicySet, evidence: Path
) -> None:
    """Real httpx, a server that never answers: revoked mid-request, the run stops with
    ``LeaseRevoked``, httpcore's shielded close completes, the runtime exits cleanly."""
    async with _silent_server() as server, _runtime(allow_all, evidence) as rt:
        handle = await rt.start(chat, server.url, principal="alice", scopes={"llm"}, ttl=30)
        with anyio.fail_after(10):
            await server.requested.wait()
        rt.revoke(handle.run_id, reason="operator")
        with pytest.raises(LeaseRevoked):
            await handle.result()
    assert set(_outcomes(handle.evidence_path)) == {"cleaned"}
    assert _uncooperative(handle.evidence_path) == []
    assert verify_run(handle.evidence_path, KEY.public_key).ok


async def test_httpx_request_to_a_silent_loopback_server_is_cleaned_up_on_ttl_expiry(
    allow_all: PolicySet, evidence: Path
) -> None:
    """The same when the run's ttl runs out mid-request."""
    async with _silent_server() as server, _runtime(allow_all, evidence) as rt:
        handle = await rt.start(chat, server.url, principal="alice", scopes={"llm"}, ttl=0.5)
        with pytest.raises(LeaseExpired):
            await handle.result()
    assert server.requested.is_set()
    assert set(_outcomes(handle.evidence_path)) == {"cleaned"}
    assert _uncooperative(handle.evidence_path) == []


async def test_cleanup_ignoring_the_grace_is_abandoned_recorded_and_the_host_exits(
    allow_all: PolicySet, evidence: Path
) -> None:
    """A shielded cleanup that would take 60 s: abandoned when the grace ends, recorded
    as uncooperative with each step's end ``abandoned``, and the host leaves normally."""
    seen = _Cleanup()

    @tool
    async def stubborn() -> None:
        seen.entered.set()
        try:
            await anyio.sleep(30)
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.sleep(60)
            seen.cleaned = True

    @agent
    async def caller(ctx: Context) -> None:
        await ctx.call(stubborn)

    with anyio.fail_after(10):
        async with _stopping(allow_all, evidence, caller, cleanup_grace=0.2) as (rt, handle):
            await seen.entered.wait()
            rt.revoke(handle.run_id, reason="operator")
            with pytest.raises(LeaseRevoked):
                await handle.result()
    assert not seen.cleaned
    assert set(_outcomes(handle.evidence_path)) == {"abandoned"}
    (note,) = _uncooperative(handle.evidence_path)
    assert "cleanup grace ended" in note["reason"]
    assert verify_run(handle.evidence_path, KEY.public_key).ok


async def test_no_governed_action_starts_during_cleanup(
    allow_all: PolicySet, evidence: Path
) -> None:
    """A ``finally`` that calls a tool: refused at once with the stop, before any decision
    or tool body, and recorded as the task trying to act after the stop."""
    ran = False
    entered = anyio.Event()
    refused: list[BaseException] = []

    @tool
    async def side_effect() -> None:
        nonlocal ran
        ran = True

    @agent
    async def sneaky(ctx: Context) -> None:
        entered.set()
        try:
            await anyio.sleep(30)
        finally:
            try:
                await ctx.call(side_effect)
            except LeaseRevoked as exc:
                refused.append(exc)

    async with _stopping(allow_all, evidence, sneaky) as (rt, handle):
        await entered.wait()
        rt.revoke(handle.run_id, reason="operator")
        with pytest.raises(LeaseRevoked):
            await handle.result()
    assert not ran
    assert len(refused) == 1
    decided = decisions(_records(handle.evidence_path))
    assert [d["target"] for d in decided] == ["sneaky"]
    (note,) = _uncooperative(handle.evidence_path)
    assert "tried to start tool:side_effect after the stop" in note["reason"]


async def test_except_lease_revoked_around_async_with_runtime_catches_it(
    allow_all: PolicySet, evidence: Path
) -> None:
    """A violation raised inside the block leaves ``async with Runtime()`` as itself."""
    entered = anyio.Event()

    @agent
    async def sleeper(ctx: Context) -> None:
        entered.set()
        await anyio.sleep(30)

    caught: LeaseRevoked | None = None
    try:
        async with _runtime(allow_all, evidence) as rt:
            handle = await rt.start(sleeper, principal="alice", ttl=30)
            await entered.wait()
            rt.revoke(handle.run_id, reason="operator")
            await handle.result()
    except LeaseRevoked as exc:
        caught = exc
    assert caught is not None and caught.check == "lease.revoked"


async def test_an_error_raised_inside_async_with_runtime_leaves_it_unwrapped(
    allow_all: PolicySet, evidence: Path
) -> None:
    """``except ValueError`` around the block catches the block's ``ValueError``."""
    with pytest.raises(ValueError, match="the caller's own error"):
        async with _runtime(allow_all, evidence):
            raise ValueError("the caller's own error")


async def test_agent_errors_reach_the_delegator_and_the_caller_as_themselves(
    allow_all: PolicySet, evidence: Path
) -> None:
    """An exception from a delegated agent (its own task) is the same exception in the
    delegating agent and out of ``rt.run``: never an ExceptionGroup."""
    seen: list[BaseException] = []

    @agent
    async def child(ctx: Context) -> None:
        raise KeyError("missing")

    @agent
    async def parent(ctx: Context) -> None:
        try:
            await ctx.delegate(child)
        except KeyError as exc:
            seen.append(exc)
            raise

    async with _runtime(allow_all, evidence) as rt:
        with pytest.raises(KeyError, match="missing"):
            await rt.run(parent, principal="alice")
    assert len(seen) == 1


async def test_runtime_service_failure_surfaces_as_one_governance_unavailable(
    allow_all: PolicySet, evidence: Path
) -> None:
    """A background task of the runtime that fails: one ``GovernanceUnavailable`` out of
    the block (its cause attached), not a group and not a bare cancellation."""

    async def broken_service() -> None:
        raise OSError("disk gone")

    with pytest.raises(GovernanceUnavailable) as info:
        async with _runtime(allow_all, evidence) as rt:
            assert rt._tg is not None
            rt._tg.start_soon(broken_service)
            await anyio.sleep(5)
    assert info.value.check == "runtime.services"
    assert "OSError: disk gone" in info.value.reason


async def test_parallel_used_without_async_with_is_refused_with_a_clear_error(
    allow_all: PolicySet, evidence: Path
) -> None:
    """``p.start`` on a block that was never entered raises at once, naming the fix; the
    run ends with that error (no hang, no bare ``CancelledError``), and no branch ran."""
    ran = False

    @tool
    async def work() -> None:
        nonlocal ran
        ran = True

    @agent
    async def careless(ctx: Context) -> None:
        p = ctx.parallel()
        p.start(work)

    async with _runtime(allow_all, evidence) as rt:
        with anyio.fail_after(10), pytest.raises(RuntimeError, match=r"async with ctx\.parallel"):
            await rt.run(careless, principal="alice")
    assert not ran
