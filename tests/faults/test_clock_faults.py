"""Wall-clock jumps of an hour, forward and backward, in the middle of a live run.

Locally, expiry never reads the wall clock: lease deadlines are ``time.monotonic``
deadlines, and every lease time of a run (``iat``, ``exp``, the run's hard ``deadline``)
is on the run's lease clock — the wall time at run start advanced by the monotonic clock
(``Run.lease_clock_us``). So a jump neither expires a renewal or a delegation early nor
stretches the ttl. Evidence timestamps (``t`` of each record) are on the same clock, so
the evidence of a run that lived through a jump verifies (the verifier's
``CLOCK_SKEW_US`` only matters between different clocks, e.g. another host's).
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pytest

from tenure import LeaseExpired, SigningKey
from tenure.evidence import verify_run
from tests.faults.conftest import Workflow, assert_evidence, assert_stopped, records, runtime
from tests.support.evidence import issued_leases, renewed_leases

HOUR_NS = 3600 * 10**9


class JumpingClock:
    """``time.time_ns`` / ``time.time`` with an offset that a test can jump."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.offset_ns = 0
        real_ns, real = time.time_ns, time.time
        monkeypatch.setattr(time, "time_ns", lambda: real_ns() + self.offset_ns)
        monkeypatch.setattr(time, "time", lambda: real() + self.offset_ns / 1e9)


def _renewals(wf: Workflow) -> int:
    assert wf.run is not None
    return sum(state.lease.claims.gen for state in wf.run.leases.values())


async def test_forward_jump_of_an_hour_neither_expires_renewals_nor_delegations(
    wf: Workflow, evidence: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """+1 h mid-run: leases keep being renewed, a child lease issued after it is valid."""
    clock = JumpingClock(monkeypatch)
    key = SigningKey.generate()
    async with runtime(evidence, key=key, lease_seconds=0.2, renew_fraction=0.5) as rt:
        handle = await wf.start(rt)
        clock.offset_ns = HOUR_NS
        before = _renewals(wf)
        while _renewals(wf) < before + 4 and not handle.done:  # renewals after the jump
            await wf.run_turn()
        wf.go.set()  # the workers call a tool and delegate (new child leases) after it
        result = await handle.result()
    assert result[:2] == ["w1", "w2"]
    assert sorted(wf.after) == ["w1:after", "w1:helper", "w2:after", "w2:helper"]
    recs = records(handle.evidence_path)
    assert recs[-2]["kind"] == "run.end" and recs[-2]["status"] == "ok"
    start = recs[0]
    # Every lease time is on the run's clock, within the run's deadline.
    leases = issued_leases(recs) + renewed_leases(recs)
    assert renewed_leases(recs) and all(c["exp"] <= start["deadline"] for c in leases)
    # Record times are on the run's clock too: the jump shows nowhere in the evidence.
    assert all(b["t"] >= a["t"] for a, b in itertools.pairwise(recs))
    assert recs[-1]["t"] - recs[0]["t"] < HOUR_NS // 1000
    rep = verify_run(handle.evidence_path, key.public_key)
    assert rep.ok, rep.problem


async def test_backward_jump_of_an_hour_does_not_let_the_run_outlive_its_ttl(
    evidence: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """-1 h mid-run: renewals continue, the run still stops at its ttl; evidence verifies."""
    wf = Workflow(ticker=False)
    clock = JumpingClock(monkeypatch)
    key = SigningKey.generate()
    async with runtime(evidence, key=key, lease_seconds=0.2, renew_fraction=0.5) as rt:
        handle = await wf.start(rt, ttl=0.8)
        clock.offset_ns = -HOUR_NS
        with pytest.raises(LeaseExpired) as info:
            await handle.result()  # the workers wait for `go`, which never comes
        wf.go.set()
    assert_stopped(info.value, LeaseExpired, "run.ttl", wf)
    recs = records(handle.evidence_path)
    assert renewed_leases(recs)
    assert all(b["t"] >= a["t"] for a, b in itertools.pairwise(recs))
    assert_evidence(handle.evidence_path, key, check="run.ttl")
