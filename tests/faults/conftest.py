"""Fault-injection fixtures: a small multi-agent workflow and the fail-closed assertions.

The workflow (:class:`Workflow`): a ``coordinator`` agent fans out, in parallel, to two
``worker`` agents and (optionally) a ``ticker`` agent. Each worker calls the ``act`` tool
once, reports it arrived, waits for ``go``, then calls ``act`` (or ``after_tool``) again
and delegates to a ``helper`` agent that calls ``act`` once more. The ticker calls ``act``
every few milliseconds until ``go``. Every tool body appends its tag to ``effects``, and
to ``after_stop`` when it runs while the run is already stopped or cancelled.

A fault test: start the run, ``await wf.ready.wait()`` (both workers did their first
step), inject the fault, ``wf.go.set()``, and assert with :func:`assert_stopped` and
:func:`assert_evidence`: the documented ``GovernanceViolation`` subclass and check, no
``:after`` tool side effect, no tool body run after the stop, and evidence that records
the stop and still verifies with the runtime's public key.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest

from tenure import Context, GovernanceViolation, RunHandle, Runtime, SigningKey, agent, tool
from tenure.agents._decorators import Agent, Tool
from tenure.evidence import VerifyReport, verify_run
from tenure.evidence._ledger_io import FileOps
from tenure.runtime.kernel._run import Run

ALLOW_ALL_TOML = """
version = 1
default = "deny"

[[rules]]
id = "faults-allow-everything"
effect = "allow"
"""

SCOPES = frozenset({"act"})

#: Small intervals so that watchdog-detected faults are seen within a few milliseconds.
FAST: dict[str, Any] = {"watchdog_interval": 0.01, "attest_interval": 3600.0}


class Workflow:
    """One multi-agent workflow per test (agents are closures over this object)."""

    def __init__(self, *, ticker: bool = True) -> None:
        self.effects: list[str] = []
        self.after_stop: list[str] = []
        self.ready = anyio.Event()
        self.go = anyio.Event()
        self.run: Run | None = None
        self._arrived = 0
        wf = self

        def effect(tag: str) -> str:
            run = wf.run
            if run is not None and (run.stop is not None or run.cancelled_reason is not None):
                wf.after_stop.append(tag)
            wf.effects.append(tag)
            return tag

        @tool(scopes={"act"})
        async def act(tag: str) -> str:
            return effect(tag)

        @tool(scopes={"act"})
        async def transfer(tag: str) -> str:
            return effect(tag)

        @agent(scopes={"act"})
        async def helper(ctx: Context, name: str) -> str:
            return str(await ctx.call(act, f"{name}:helper"))

        @agent(scopes={"act"})
        async def worker(ctx: Context, name: str) -> str:
            await ctx.call(act, f"{name}:before")
            wf._arrive()
            await wf.go.wait()
            await ctx.call(wf.after_tool, f"{name}:after")
            await ctx.delegate(helper, name)
            return name

        @agent(scopes={"act"})
        async def ticker_agent(ctx: Context) -> int:
            n = 0
            while not wf.go.is_set():
                await ctx.call(act, f"ticker:{n}")
                n += 1
                await anyio.sleep(0.005)
            return n

        @agent(scopes={"act"})
        async def coordinator(ctx: Context) -> list[Any]:
            async with ctx.parallel() as p:
                p.start(worker, "w1")
                p.start(worker, "w2")
                if ticker:
                    p.start(ticker_agent)
            return p.results

        self.act: Tool = act
        self.transfer: Tool = transfer
        self.after_tool: Tool = act
        self.helper: Agent = helper
        self.worker: Agent = worker
        self.coordinator: Agent = coordinator

    def _arrive(self) -> None:
        self._arrived += 1
        if self._arrived == 2:
            self.ready.set()

    async def start(self, rt: Runtime, *, ttl: float = 30.0) -> RunHandle:
        """Start the coordinator and wait until both workers did their first tool call."""
        handle = await rt.start(self.coordinator, principal="alice", scopes=SCOPES, ttl=ttl)
        self.run = handle._run
        await self.ready.wait()
        return handle

    async def run_turn(self) -> None:
        """Let the event loop turn for a few milliseconds (watchdog passes, tickers)."""
        await anyio.sleep(0.005)

    @property
    def after(self) -> list[str]:
        """Tool side effects that were requested after the fault (tagged ``:after``)."""
        return [e for e in self.effects if e.endswith((":after", ":helper"))]


@pytest.fixture
def wf() -> Workflow:
    """The multi-agent workflow (coordinator, two workers, a ticker)."""
    return Workflow()


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    """A watched-able policy file that allows everything."""
    path = tmp_path / "policy" / "policy.toml"
    path.parent.mkdir()
    path.write_text(ALLOW_ALL_TOML)
    return path


def runtime(evidence: Path, *, policies: Any = None, key: Any = None, **cfg: Any) -> Runtime:
    """A runtime with fast watchdog settings (``cfg`` overrides them)."""
    from tenure.policies import PolicySet

    return Runtime(
        policies=policies if policies is not None else PolicySet.from_text(ALLOW_ALL_TOML),
        evidence_dir=evidence,
        key=key if key is not None else SigningKey.generate(),
        **{**FAST, **cfg},
    )


def records(run_dir: Path) -> list[dict[str, Any]]:
    """Every complete record of ``run_dir``'s ledger."""
    lines = (run_dir / "ledger.jsonl").read_bytes().split(b"\n")
    return [json.loads(line) for line in lines if line]


def assert_stopped(
    error: BaseException, cls: type[GovernanceViolation], check: str, wf: Workflow
) -> None:
    """The run stopped with ``cls``/``check`` and no tool ran after the fault or the stop."""
    assert type(error) is cls, f"expected {cls.__name__}, got {type(error).__name__}: {error}"
    assert isinstance(error, GovernanceViolation)
    assert error.check == check, f"check {error.check!r} != {check!r}: {error}"
    assert error.run_id is not None
    assert wf.after == [], f"tool side effects after the fault: {wf.after}"
    assert wf.after_stop == [], f"tool bodies ran after the stop: {wf.after_stop}"


def assert_evidence(
    run_dir: Path,
    key: SigningKey,
    *,
    check: str | None,
    status: str = "violation",
    error: str | None = None,
) -> VerifyReport:
    """The ledger records the stop (violation with ``check`` and ``run.end``) and verifies."""
    recs = records(run_dir)
    ends = [r for r in recs if r["kind"] == "run.end"]
    assert len(ends) == 1, f"expected one run.end, got {ends}"
    assert ends[0]["status"] == status, ends[0]
    if error is not None:
        assert ends[0]["error"] == error, ends[0]
    if check is not None:
        assert ends[0]["check"] == check, ends[0]
        violations = [r for r in recs if r["kind"] == "violation"]
        assert violations and violations[0]["check"] == check, violations
    rep = verify_run(run_dir, key.public_key)
    assert rep.ok, rep.failure_line()
    assert rep.run_status == status
    return rep


def assert_durable_prefix_verifies(run_dir: Path, key: SigningKey) -> VerifyReport:
    """When the ledger itself failed: what reached the file still verifies (no run.end)."""
    rep = verify_run(run_dir, key.public_key)
    assert rep.verdict == "incomplete" and not rep.failures, rep.failure_line()
    assert rep.run_status == "incomplete"  # the ledger could not record its own failure
    assert "run.no_end" in rep.codes, rep.codes
    return rep


class FaultyOps(FileOps):
    """FileOps that raise the armed ``OSError`` on write or fsync (and count the calls)."""

    def __init__(self) -> None:
        self.write_error: OSError | None = None
        self.fsync_error: OSError | None = None
        self.fsyncs_after_arming = 0
        self.writes_after_arming = 0

    def write(self, fd: int, data: bytes) -> int:
        """Raise the armed write error, else ``os.write``."""
        if self.write_error is not None:
            self.writes_after_arming += 1
            raise self.write_error
        return super().write(fd, data)

    def fsync(self, fd: int) -> None:
        """Raise the armed fsync error, else ``os.fsync``."""
        if self.fsync_error is not None:
            self.fsyncs_after_arming += 1
            raise self.fsync_error
        super().fsync(fd)
