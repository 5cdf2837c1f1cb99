"""Process and thread isolation: a stop kills the worker (or abandons the thread), recorded.

Cross-process progress (the tool has started, the pid is gone) cannot be signalled with an
in-process event, so those waits poll, every one bounded by ``anyio.fail_after``.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from rich.console import Console

from tenure import (
    Context,
    GovernanceUnavailable,
    GovernanceViolation,
    LeaseRevoked,
    PolicyDenied,
    Runtime,
    SigningKey,
    agent,
    tool,
)
from tenure.cli._tree import print_trace
from tenure.evidence import verify_run
from tenure.lineage import load_trace
from tenure.policies import PolicySet
from tenure.runtime.isolation import _wire
from tenure.runtime.isolation._wire import RemoteError
from tests.runtime import isolation_tools as T


def _runtime(policy: PolicySet, evidence: Path, key: SigningKey) -> Runtime:
    return Runtime(policies=policy, evidence_dir=evidence, key=key)


def _records(run_dir: Path, kind: str) -> list[dict[str, Any]]:
    lines = (run_dir / "ledger.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def _end_statuses(run_dir: Path, step: str) -> list[str]:
    """How ``step`` ended, from its ``step.end`` and any ``steps.stopped`` naming it."""
    ends = [e["status"] for e in _records(run_dir, "step.end") if e["step"] == step]
    stops = _records(run_dir, "steps.stopped")
    return ends + ["stopped" for r in stops for s in r["steps"] if s == step]


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _dead(pid: int) -> bool:
    """Gone, or a zombie that nobody reaps (an orphan in a container without an init)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return _gone(pid)
    return state in ("Z", "X")


def _pid_in(marker: Path) -> int | None:
    return int(marker.read_text()) if marker.exists() else None


async def _until(done: Callable[[], bool], seconds: float) -> None:
    # Another process's progress has no in-process event to wait on: poll, bounded.
    with anyio.fail_after(seconds):
        while not done():  # noqa: ASYNC110
            await anyio.sleep(0.005)


async def _wait_for_pid(marker: Path) -> int:
    await _until(lambda: _pid_in(marker) is not None, 20)  # a cold worker starts Python
    pid = _pid_in(marker)
    assert pid is not None
    return pid


async def _wait_gone(pid: int) -> None:
    await _until(lambda: _gone(pid), 5)


@agent(scopes={"fs:write"})
async def call_once(ctx: Context, target: Any, *args: Any) -> Any:
    return await ctx.call(target, *args)


@agent
async def impatient_process(ctx: Context, marker: str) -> str:
    """Call a process tool that outlives its own timeout; return the TimeoutError's text."""
    try:
        await ctx.call(T.sleep_past_timeout, marker)
    except TimeoutError as exc:
        return str(exc)
    return "finished"


async def _revoke_while_running(
    rt: Runtime, target: Any, *args: Any, marker: Path
) -> tuple[Path, int, LeaseRevoked]:
    handle = await rt.start(
        call_once, target, *args, principal="alice", scopes={"fs:write"}, ttl=60
    )
    pid = await _wait_for_pid(marker)
    rt.revoke(handle.run_id, reason="kill switch")
    with anyio.fail_after(5), pytest.raises(LeaseRevoked) as info:
        await handle.result()
    return handle.evidence_path, pid, info.value


@pytest.mark.parametrize("blocker", ["time_sleep_30", "pure_python_while_true"])
async def test_process_tool_that_cannot_cooperate_is_killed_on_revocation(
    allow_all: PolicySet, evidence: Path, key: SigningKey, tmp_path: Path, blocker: str
) -> None:
    """time.sleep(30) and `while True` in a worker: killed, reaped, recorded, run revoked."""
    marker = tmp_path / "started"
    async with _runtime(allow_all, evidence, key) as rt:
        if blocker == "time_sleep_30":
            args: tuple[Any, ...] = (T.sleep_then_write, str(marker), str(tmp_path / "o"), 30)
        else:
            args = (T.spin_forever, str(marker))
        run_dir, pid, stop = await _revoke_while_running(rt, *args, marker=marker)
        await _wait_gone(pid)
    assert stop.check == "lease.revoked" and "kill switch" in str(stop)
    killed = _records(run_dir, "isolation.killed")
    assert [(k["pid"], k["step"]) for k in killed] == [(pid, "2")]
    assert "LeaseRevoked" in killed[0]["reason"] and "kill switch" in killed[0]["reason"]
    assert _end_statuses(run_dir, "2") == ["stopped"]
    assert verify_run(run_dir, key.public_key).ok


async def test_processes_a_killed_tool_spawned_are_killed_with_it(
    allow_all: PolicySet, evidence: Path, key: SigningKey, tmp_path: Path
) -> None:
    """The kill takes the worker's whole process group: a grandchild's late write never lands."""
    marker, child_marker = tmp_path / "started", tmp_path / "child"
    out, delay = tmp_path / "written-by-grandchild.txt", 0.6
    async with _runtime(allow_all, evidence, key) as rt:
        args = (str(marker), str(child_marker), str(out), delay)
        _, pid, _ = await _revoke_while_running(rt, T.spawn_then_wait, *args, marker=marker)
        child = _pid_in(child_marker)
        assert child is not None
        await _until(lambda: _gone(pid) and _dead(child), 5)
        await anyio.sleep(delay + 0.6)  # longer than the grandchild would have needed
    assert not out.exists()


@pytest.mark.parametrize(
    ("tool_name", "blocking"),
    [
        ("sleep_then_write", ("time.sleep(delay)",)),
        ("spin_then_write", ("while time.monotonic()", "n += 1")),  # either line of the loop
    ],
)
async def test_process_tool_running_past_the_worker_stall_bound_is_killed_with_its_frame(
    allow_all: PolicySet,
    evidence: Path,
    key: SigningKey,
    tmp_path: Path,
    tool_name: str,
    blocking: tuple[str, ...],
) -> None:
    """worker_stall_bound: the worker's stack is recorded (the line it was blocked on), the
    worker is killed, the run stops with isolation.stall, and the late write never lands."""
    marker, out = tmp_path / "started", tmp_path / "after-the-stall.txt"
    tool_fn = getattr(T, tool_name)
    async with Runtime(
        policies=allow_all, evidence_dir=evidence, key=key, worker_stall_bound=0.5
    ) as rt:
        handle = await rt.start(
            call_once, tool_fn, str(marker), str(out), 30, principal="alice", scopes={"fs:write"}
        )
        pid = await _wait_for_pid(marker)
        with anyio.fail_after(10), pytest.raises(GovernanceUnavailable) as info:
            await handle.result()
        await _wait_gone(pid)
    stop = info.value
    assert (stop.check, stop.task) == ("isolation.stall", f"tool:{tool_name}")
    assert "worker_stall_bound (0.5s)" in stop.reason and "isolation_tools.py" in stop.reason
    [stall] = _records(handle.evidence_path, "isolation.stall")
    assert (stall["step"], stall["pid"], stall["duration_ms"]) == ("2", pid, 500)
    lines = [f"line {_line_of(tool_name, code)} in {tool_name}" for code in blocking]
    assert any(line in stall["frame"] for line in lines), (lines, stall["frame"])
    killed = _records(handle.evidence_path, "isolation.killed")
    assert [(k["pid"], k["reason"]) for k in killed] == [(pid, "stall: running for more than 0.5s")]
    assert not out.exists()
    assert verify_run(handle.evidence_path, key.public_key).ok
    assert f'stalled 500 ms in File "{T.__file__}"' in _trace_text(handle.evidence_path)


def _trace_text(run_dir: Path) -> str:
    console = Console(record=True, width=300, color_system=None)
    print_trace(load_trace(run_dir), console)
    return console.export_text()


def _line_of(function: str, code: str) -> int:
    """The line number of the first line in ``function`` that starts with ``code``."""
    lines = Path(T.__file__).read_text().splitlines()
    start = next(n for n, text in enumerate(lines, 1) if text.startswith(f"def {function}("))
    return next(n for n, text in enumerate(lines, 1) if n > start and text.strip().startswith(code))


async def test_tool_timeout_shorter_than_the_stall_bound_stays_a_timeout(
    allow_all: PolicySet, evidence: Path, key: SigningKey, tmp_path: Path
) -> None:
    """A per-tool timeout below worker_stall_bound keeps its meaning: TimeoutError, run goes on."""
    marker = tmp_path / "started"

    async with Runtime(
        policies=allow_all, evidence_dir=evidence, key=key, worker_stall_bound=30
    ) as rt:
        handle = await rt.start(impatient_process, str(marker), principal="alice", ttl=60)
        with anyio.fail_after(20):
            message = await handle.result()
    assert "timeout of 0.3s" in message
    assert _records(handle.evidence_path, "isolation.stall") == []


@pytest.mark.parametrize("tool_name", ["sleep_then_write", "spin_then_write"])
async def test_file_a_tool_would_write_after_revocation_never_appears(
    allow_all: PolicySet, evidence: Path, key: SigningKey, tmp_path: Path, tool_name: str
) -> None:
    """The side effect scheduled after the revocation point never happens."""
    marker, out = tmp_path / "started", tmp_path / "after-revocation.txt"
    delay = 0.6
    async with _runtime(allow_all, evidence, key) as rt:
        await _revoke_while_running(
            rt, getattr(T, tool_name), str(marker), str(out), delay, marker=marker
        )
        await anyio.sleep(delay + 0.6)  # longer than the tool would have needed
    assert not out.exists()


async def test_process_tool_killed_when_the_policy_reload_denies_the_live_step(
    allow_all: PolicySet, evidence: Path, key: SigningKey, tmp_path: Path
) -> None:
    """Any fail-closed stop kills the worker, not only revocation."""
    marker = tmp_path / "started"
    deny_tools = PolicySet.from_text(
        """
version = 1
default = "deny"
[[rules]]
id = "agents-only"
effect = "allow"
actions = ["invoke_agent"]
""",
        source="agents-only.toml",
    )
    async with _runtime(allow_all, evidence, key) as rt:
        handle = await rt.start(
            call_once, T.spin_forever, str(marker), principal="alice", scopes={"fs:write"}, ttl=60
        )
        pid = await _wait_for_pid(marker)
        rt.reload_policies(deny_tools)
        with anyio.fail_after(5), pytest.raises(Exception) as info:
            await handle.result()
        await _wait_gone(pid)
    assert type(info.value).__name__ == "PolicyDenied"
    assert [k["pid"] for k in _records(handle.evidence_path, "isolation.killed")] == [pid]


async def test_worker_is_reused_across_calls(
    allow_all: PolicySet, evidence: Path, key: SigningKey
) -> None:
    """Two calls in a row run in the same (healthy) worker process, not in ours."""

    @agent
    async def twice(ctx: Context) -> tuple[int, int]:
        return await ctx.call(T.worker_pid), await ctx.call(T.worker_pid)

    async with _runtime(allow_all, evidence, key) as rt:
        first, second = await rt.run(twice, principal="alice", ttl=60)
        assert rt._isolation.pool.started == 1
    assert first == second != os.getpid()


async def test_parallel_calls_beyond_the_pool_size_wait_for_a_free_worker(
    allow_all: PolicySet, evidence: Path, key: SigningKey
) -> None:
    """Five concurrent calls on a pool of two: all answered, never more than two workers."""

    @agent
    async def fan(ctx: Context) -> list[int]:
        async with ctx.parallel() as p:
            for _ in range(5):
                p.start(T.pid_after, 0.05)
        return list(p.results)

    async with _runtime(allow_all, evidence, key) as rt:
        rt._isolation._max_workers = 2
        pids = await rt.run(fan, principal="alice", ttl=60)
        assert rt._isolation.pool.started == 2
    assert len(pids) == 5 and len(set(pids)) == 2


async def test_arguments_and_results_cross_the_boundary_and_tool_errors_come_back(
    allow_all: PolicySet, evidence: Path, key: SigningKey
) -> None:
    """Values round-trip; a tool's exception is re-raised in the agent with its remote
    traceback, and the worker stays in service."""

    @agent
    async def use(ctx: Context) -> tuple[Any, str, str, int, int]:
        value = await ctx.call(T.echo, {"k": [1, 2.5, "x"], "b": b"\x00"})
        try:
            await ctx.call(T.fail, "bad input")
        except ValueError as exc:
            message, remote = str(exc), str(exc.__cause__)
        return value, message, remote, await ctx.call(T.worker_pid), await ctx.call(T.worker_pid)

    async with _runtime(allow_all, evidence, key) as rt:
        value, message, remote, pid1, pid2 = await rt.run(use, principal="alice", ttl=60)
    assert value == {"k": [1, 2.5, "x"], "b": b"\x00"}
    assert message == "bad input"
    assert "isolation_tools.py" in remote and "raise ValueError(message)" in remote
    assert pid1 == pid2


async def test_arguments_that_cannot_cross_are_refused_before_any_worker_runs(
    allow_all: PolicySet, evidence: Path, key: SigningKey
) -> None:
    """A lock is not data: denied (``args.canonical``) and recorded; no worker starts."""

    @agent
    async def send_lock(ctx: Context) -> str:
        try:
            await ctx.call(T.echo, threading.Lock())
        except PolicyDenied as exc:
            return f"{exc.check}: {exc}"
        return "sent"

    async with _runtime(allow_all, evidence, key) as rt:
        message = await rt.run(send_lock, principal="alice", ttl=60)
        assert rt._isolation.pool.started == 0
    assert message.startswith("args.canonical: ") and "_thread.lock" in message


async def test_worker_crash_stops_the_run_with_governance_unavailable(
    allow_all: PolicySet, evidence: Path, key: SigningKey
) -> None:
    """os._exit(3) inside the tool: a clear GovernanceUnavailable, no hang, evidence ok."""

    @agent
    async def crash(ctx: Context) -> None:
        await ctx.call(T.exit_hard, 3)

    async with _runtime(allow_all, evidence, key) as rt:
        handle = await rt.start(crash, principal="alice", ttl=60)
        with anyio.fail_after(20), pytest.raises(GovernanceUnavailable) as info:
            await handle.result()
    assert info.value.check == "isolation.worker_crashed"
    assert "exit code 3" in str(info.value) and "tool:exit_hard" in str(info.value)
    ends = _records(handle.evidence_path, "run.end")
    assert ends[0]["check"] == "isolation.worker_crashed"
    assert verify_run(handle.evidence_path, key.public_key).ok


async def test_worker_killed_from_outside_stops_the_run_with_governance_unavailable(
    allow_all: PolicySet, evidence: Path, key: SigningKey, tmp_path: Path
) -> None:
    """A worker SIGKILLed by someone else is a crash too, named by its signal."""
    marker = tmp_path / "started"
    async with _runtime(allow_all, evidence, key) as rt:
        handle = await rt.start(
            call_once, T.spin_forever, str(marker), principal="alice", scopes={"fs:write"}, ttl=60
        )
        os.kill(await _wait_for_pid(marker), signal.SIGKILL)
        with anyio.fail_after(5), pytest.raises(GovernanceUnavailable) as info:
            await handle.result()
    assert info.value.check == "isolation.worker_crashed"
    assert "signal SIGKILL" in str(info.value)
    assert verify_run(handle.evidence_path, key.public_key).ok


async def test_process_tool_timeout_kills_the_worker_and_the_agent_gets_timeout_error(
    allow_all: PolicySet, evidence: Path, key: SigningKey, tmp_path: Path
) -> None:
    """``timeout=`` bounds one call: worker killed and recorded; the run itself goes on."""
    marker = tmp_path / "started"

    async with _runtime(allow_all, evidence, key) as rt:
        handle = await rt.start(impatient_process, str(marker), principal="alice", ttl=60)
        with anyio.fail_after(20):
            message = await handle.result()
    pid = await _wait_for_pid(marker)
    await _wait_gone(pid)
    assert "timeout of 0.3s" in message
    killed = _records(handle.evidence_path, "isolation.killed")
    assert [(k["pid"], k["reason"]) for k in killed] == [(pid, "timeout after 0.3s")]


async def test_thread_tool_late_result_is_discarded_and_recorded_as_abandoned(
    allow_all: PolicySet, evidence: Path, key: SigningKey
) -> None:
    """The thread goes on after the revocation, but its result never reaches the agent."""
    ready, go = threading.Event(), threading.Event()
    returned: list[str] = []
    seen: list[str] = []
    T.THREAD_SYNC["late"] = (ready, go, returned)

    @agent
    async def caller(ctx: Context) -> None:
        seen.append(await ctx.call(T.wait_then_return, "late"))

    async with _runtime(allow_all, evidence, key) as rt:
        handle = await rt.start(caller, principal="alice", ttl=60)
        with anyio.fail_after(5):
            await anyio.to_thread.run_sync(ready.wait)
        rt.revoke(handle.run_id, reason="stop now")
        with anyio.fail_after(5), pytest.raises(LeaseRevoked):
            await handle.result()
        go.set()  # the thread finishes after the stop; its result is delivered to nobody
        await _until(lambda: bool(returned), 5)
    assert returned == ["late"] and seen == []
    abandoned = _records(handle.evidence_path, "step.abandoned")
    assert [a["step"] for a in abandoned] == ["2"]
    assert "LeaseRevoked" in abandoned[0]["reason"]
    assert _end_statuses(handle.evidence_path, "2") == ["stopped"]
    assert verify_run(handle.evidence_path, key.public_key).ok


async def test_thread_result_arriving_after_the_stop_is_not_returned(
    allow_all: PolicySet, evidence: Path, key: SigningKey
) -> None:
    """The stop lands while the thread is returning: the value is discarded, not handed on."""
    seen: list[str] = []
    holder: list[Runtime] = []
    run_ids: list[str] = []

    @tool(isolation="thread")
    def revoke_then_return() -> str:
        anyio.from_thread.run_sync(holder[0].revoke, run_ids[0], "mid-call")
        return "late"

    @agent
    async def caller(ctx: Context) -> None:
        run_ids.append(ctx.run_id)
        seen.append(await ctx.call(revoke_then_return))

    async with _runtime(allow_all, evidence, key) as rt:
        holder.append(rt)
        with pytest.raises(LeaseRevoked):
            await rt.run(caller, principal="alice", ttl=60)
    assert seen == []


async def test_thread_tool_timeout_abandons_the_thread(
    allow_all: PolicySet, evidence: Path, key: SigningKey
) -> None:
    """``timeout=`` on a thread tool: TimeoutError to the agent, abandonment recorded."""
    go = threading.Event()
    T.THREAD_SYNC["timeout"] = (threading.Event(), go, [])

    @agent
    async def impatient(ctx: Context) -> str:
        try:
            await ctx.call(T.thread_past_timeout, "timeout")
        except TimeoutError as exc:
            return str(exc)
        return "finished"

    async with _runtime(allow_all, evidence, key) as rt:
        handle = await rt.start(impatient, principal="alice", ttl=60)
        message = await handle.result()
        go.set()
    assert "thread was abandoned" in message
    assert [a["reason"] for a in _records(handle.evidence_path, "step.abandoned")] == [
        "timeout after 0.2s"
    ]


async def test_process_isolated_agent_runs_in_a_worker_with_a_read_only_context(
    allow_all: PolicySet, evidence: Path, key: SigningKey
) -> None:
    """A sync agent body runs in a worker; governed actions from there are refused."""
    async with _runtime(allow_all, evidence, key) as rt:
        handle = await rt.start(T.crunch, 1000, principal="alice", ttl=60)
        out = await handle.result()
    assert out["pid"] != os.getpid() and out["run"] == handle.run_id
    assert out["sum"] == sum(range(1000))
    assert "not available in a process-isolated agent" in out["refused"]


async def test_process_isolated_agent_is_killed_when_its_lease_is_revoked(
    allow_all: PolicySet, evidence: Path, key: SigningKey, tmp_path: Path
) -> None:
    """Revoking a delegated agent's lease kills the worker running its body."""
    marker = tmp_path / "started"
    leases: list[str] = []

    @agent
    async def parent(ctx: Context) -> None:
        leases.append(ctx.lease.id)
        await ctx.delegate(T.stuck_agent, str(marker))

    async with _runtime(allow_all, evidence, key) as rt:
        handle = await rt.start(parent, principal="alice", ttl=60)
        pid = await _wait_for_pid(marker)
        rt.revoke(handle.run_id, reason="agent revoked")
        with anyio.fail_after(5), pytest.raises(LeaseRevoked):
            await handle.result()
        await _wait_gone(pid)
    assert [k["pid"] for k in _records(handle.evidence_path, "isolation.killed")] == [pid]


def test_isolation_declarations_that_cannot_work_are_refused() -> None:
    """Async bodies cannot be process/thread isolated, nor nested functions be process
    isolated; timeout needs isolation."""
    with pytest.raises(TypeError, match="plain \\(sync\\) function"):

        @agent(isolation="process")
        async def async_agent(ctx: Context) -> None: ...

    with pytest.raises(TypeError, match="defined at module level"):

        @tool(isolation="process")
        def local_tool(x: int) -> int:
            return x

    with pytest.raises(ValueError, match="timeout"):

        @tool(timeout=1.0)
        def inline(x: int) -> int:
            return x

    with pytest.raises(ValueError, match="timeout"):

        @tool(isolation="process", timeout=0)
        def zero(x: int) -> int:
            return x


# --- a worker that lies about its reply -------------------------------------------------


async def test_a_truncated_reply_never_blocks_the_loop_and_revoke_still_kills_the_worker(
    allow_all: PolicySet, evidence: Path, key: SigningKey, tmp_path: Path
) -> None:
    """The attack: half a frame, then silence. Reading it used to block the event loop for
    good, so revoke never ran; now the loop stays free, revoke stops the run and kills it."""
    marker = tmp_path / "started"
    async with _runtime(allow_all, evidence, key) as rt:
        path, pid, stop = await _revoke_while_running(
            rt, T.reply_truncated_then_hang, str(marker), marker=marker
        )
        await _wait_gone(pid)
    assert stop.check == "lease.revoked"
    assert _records(path, "isolation.killed")[0]["pid"] == pid
    assert verify_run(path, key.public_key).ok


@pytest.mark.parametrize(
    ("tool_name", "why"),
    [
        ("reply_truncated_then_exit", "end of file inside a frame"),
        ("reply_with_a_huge_header", "more than the"),
    ],
)
async def test_a_garbled_reply_kills_the_worker_and_stops_the_run(
    allow_all: PolicySet, evidence: Path, key: SigningKey, tool_name: str, why: str
) -> None:
    """A reply that is not a well-formed frame of data is not believed: the worker is
    killed and the run stops fail closed (``isolation.worker_crashed``)."""
    async with _runtime(allow_all, evidence, key) as rt:
        handle = await rt.start(
            call_once, getattr(T, tool_name), principal="alice", scopes={"fs:write"}, ttl=60
        )
        with anyio.fail_after(20), pytest.raises(GovernanceUnavailable) as info:
            await handle.result()
        assert rt._isolation.pool.busy == 0 and rt._isolation.pool.idle_pids() == []
    assert info.value.check == "isolation.worker_crashed"
    assert why in str(info.value)
    assert _records(handle.evidence_path, "step.end") == []  # no outcome was believed
    assert verify_run(handle.evidence_path, key.public_key).ok


async def test_a_reply_that_would_run_code_when_decoded_is_refused(
    allow_all: PolicySet, evidence: Path, key: SigningKey, tmp_path: Path
) -> None:
    """The attack: a pickle whose ``__reduce__`` writes a file in the governing process.
    Replies are data-only JSON: it does not decode, the worker is killed, nothing ran."""
    out = tmp_path / "pwned"
    async with _runtime(allow_all, evidence, key) as rt:
        handle = await rt.start(
            call_once,
            T.reply_with_a_pickle_bomb,
            str(out),
            principal="alice",
            scopes={"fs:write"},
            ttl=60,
        )
        with anyio.fail_after(20), pytest.raises(GovernanceUnavailable) as info:
            await handle.result()
    assert info.value.check == "isolation.worker_crashed"
    assert "garbled reply" in str(info.value)
    assert not out.exists()


async def test_a_worker_cannot_forge_one_of_the_runtimes_own_errors(
    allow_all: PolicySet, evidence: Path, key: SigningKey
) -> None:
    """A reply naming ``tenure._errors.LeaseRevoked`` is not rebuilt as one: the agent gets a
    plain RemoteError, and the run is not stopped as if governance had spoken."""

    @agent(scopes={"fs:write"})
    async def catch(ctx: Context) -> str:
        try:
            await ctx.call(T.reply_naming_a_runtime_class)
        except GovernanceViolation:
            return "forged violation believed"
        except RemoteError as exc:
            return f"remote: {exc}"
        return "no error"

    async with _runtime(allow_all, evidence, key) as rt:
        answer = await rt.run(catch, principal="alice", scopes={"fs:write"}, ttl=60)
    assert answer == "remote: tenure._errors.LeaseRevoked: "


async def test_a_reply_frame_that_stops_halfway_is_garbled_after_its_bound(
    allow_all: PolicySet,
    evidence: Path,
    key: SigningKey,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Half a frame and silence is not a slow reply forever: once the header arrived, the
    rest must follow within FRAME_SECONDS, else the worker is killed and the run stops."""
    monkeypatch.setattr(_wire, "FRAME_SECONDS", 0.2)
    marker = tmp_path / "started"
    async with _runtime(allow_all, evidence, key) as rt:
        handle = await rt.start(
            call_once,
            T.reply_truncated_then_hang,
            str(marker),
            principal="alice",
            scopes={"fs:write"},
            ttl=60,
        )
        pid = await _wait_for_pid(marker)
        with anyio.fail_after(20), pytest.raises(GovernanceUnavailable) as info:
            await handle.result()
        await _wait_gone(pid)
    assert info.value.check == "isolation.worker_crashed"
    assert "did not arrive within 0.2s" in str(info.value)
