"""Watchdog faults: the watchdog task crashing, and the watchdog starved (heartbeat late)."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from tenure import GovernanceUnavailable, SigningKey
from tenure.runtime.services import _watchdog
from tests.faults.conftest import Workflow, assert_evidence, assert_stopped, runtime


async def test_watchdog_crash_stops_the_run(
    wf: Workflow, evidence: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dead watchdog never means 'no more checks': watchdog.crashed."""
    key = SigningKey.generate()

    def crash(self: _watchdog.Watchdog) -> None:
        raise RuntimeError("injected watchdog fault")

    async with runtime(evidence, key=key) as rt:
        handle = await wf.start(rt)
        monkeypatch.setattr(_watchdog.Watchdog, "tick", crash)
        with pytest.raises(GovernanceUnavailable) as info:
            await handle.result()
        wf.go.set()
    assert_stopped(info.value, GovernanceUnavailable, "watchdog.crashed", wf)
    assert "injected watchdog fault" in str(info.value)
    assert_evidence(handle.evidence_path, key, check="watchdog.crashed")


async def test_starved_watchdog_stops_the_run_at_the_next_await(
    wf: Workflow, evidence: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Alive but never scheduled again: the heartbeat goes stale and the gates refuse."""
    key = SigningKey.generate()
    release = anyio.Event()

    async def starved(self: _watchdog.Watchdog) -> None:
        self.beat()  # one beat, then silence (as if the loop never ran it again)
        await release.wait()

    monkeypatch.setattr(_watchdog.Watchdog, "run", starved)
    async with runtime(evidence, key=key, watchdog_liveness=0.1) as rt:
        handle = await wf.start(rt)
        with pytest.raises(GovernanceUnavailable) as info:
            await handle.result()  # the ticker's next resumption after 0.1 s is refused
        wf.go.set()
        release.set()
    assert_stopped(info.value, GovernanceUnavailable, "watchdog.heartbeat", wf)
    assert_evidence(handle.evidence_path, key, check="watchdog.heartbeat")
