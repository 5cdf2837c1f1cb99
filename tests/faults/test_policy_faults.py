"""Policy faults: an engine that raises, a watched file replaced or deleted, a bad reload."""

from __future__ import annotations

from pathlib import Path

import pytest

from tenure import AttestationMismatch, GovernanceUnavailable, SigningKey
from tenure.policies import PolicyError, PolicySet
from tests.faults.conftest import (
    ALLOW_ALL_TOML,
    Workflow,
    assert_evidence,
    assert_stopped,
    records,
    runtime,
)


def _break(policy_file: Path, fault: str) -> None:
    """Replace (or delete) the watched file, synchronously on the event loop's thread."""
    if fault == "garbage":
        policy_file.write_bytes(b"\x00\xffthis is [[not toml")
    elif fault == "deleted":
        policy_file.unlink()
    elif fault == "invalid-rule":
        policy_file.write_text(ALLOW_ALL_TOML.replace('"allow"', '"permit"'))
    else:
        policy_file.write_text(ALLOW_ALL_TOML.replace("faults-allow-everything", "edited"))


def _broken_decide(*args: object, **kwargs: object) -> object:
    raise RuntimeError("injected policy engine fault")


async def test_policy_engine_raising_during_a_decision_stops_the_run(
    wf: Workflow, evidence: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unexpected exception in PolicySet.decide never falls through to allow."""
    key = SigningKey.generate()
    async with runtime(evidence, key=key) as rt:
        handle = await wf.start(rt)
        monkeypatch.setattr(PolicySet, "decide", _broken_decide)
        wf.go.set()
        with pytest.raises(GovernanceUnavailable) as info:
            await handle.result()
    assert_stopped(info.value, GovernanceUnavailable, "policy.engine", wf)
    assert "injected policy engine fault" in str(info.value)
    assert_evidence(handle.evidence_path, key, check="policy.engine")


async def test_policy_engine_raising_during_a_renewal_stops_the_run_not_the_watchdog(
    evidence: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The watchdog's re-decision at renewal fails closed as policy.engine, not a crash."""
    wf = Workflow(ticker=False)
    key = SigningKey.generate()
    async with runtime(evidence, key=key, lease_seconds=0.2, renew_fraction=0.5) as rt:
        handle = await wf.start(rt)
        monkeypatch.setattr(PolicySet, "decide", _broken_decide)
        with pytest.raises(GovernanceUnavailable) as info:
            await handle.result()
        assert rt._gov.watchdog_deadline != float("-inf")
    assert_stopped(info.value, GovernanceUnavailable, "policy.engine", wf)
    assert "re-deciding live step" in str(info.value)
    assert_evidence(handle.evidence_path, key, check="policy.engine")


@pytest.mark.parametrize("fault", ["garbage", "deleted", "invalid-rule"])
async def test_watched_policy_file_replaced_or_deleted_stops_the_run(
    fault: str, wf: Workflow, evidence: Path, policy_file: Path
) -> None:
    """watch_policies: a file that no longer loads is a refused reload (fail closed).

    The attestation re-measure is due at every pass (attest_interval is tiny here) but
    waits for a watched reload under way, so the stop is reported as ``policy.reload``.
    """
    key = SigningKey.generate()
    async with runtime(
        evidence, key=key, policies=policy_file, watch_policies=True, attest_interval=0.01
    ) as rt:
        handle = await wf.start(rt)
        _break(policy_file, fault)
        with pytest.raises(GovernanceUnavailable) as info:
            await handle.result()
        wf.go.set()
    assert_stopped(info.value, GovernanceUnavailable, "policy.reload", wf)
    assert str(policy_file) in str(info.value)
    assert_evidence(handle.evidence_path, key, check="policy.reload")


async def test_watched_policy_file_edited_validly_is_reloaded_and_the_run_goes_on(
    wf: Workflow, evidence: Path, policy_file: Path
) -> None:
    """A valid edit is a reload (new epoch, live steps re-decided), not an attestation stop."""
    key = SigningKey.generate()
    async with runtime(
        evidence, key=key, policies=policy_file, watch_policies=True, attest_interval=0.01
    ) as rt:
        handle = await wf.start(rt)
        epoch = rt._gov.epoch
        _break(policy_file, "valid-edit")
        while rt._gov.epoch == epoch:  # the watchdog notices within a pass or two
            await wf.run_turn()
        rt.check_attestation()  # the reloaded file is the attested input now
        wf.go.set()
        result = await handle.result()
    assert result[:2] == ["w1", "w2"]
    kinds = [r["kind"] for r in records(handle.evidence_path)]
    assert "policy.reloaded" in kinds
    assert_evidence(handle.evidence_path, key, check=None, status="ok")


async def test_explicit_reload_of_a_bad_file_stops_every_live_run(
    wf: Workflow, evidence: Path, tmp_path: Path
) -> None:
    """rt.reload_policies(bad_file) raises PolicyError and stops live runs."""
    bad = tmp_path / "bad.toml"
    bad.write_text("version = 2\n")
    key = SigningKey.generate()
    async with runtime(evidence, key=key) as rt:
        handle = await wf.start(rt)
        with pytest.raises(PolicyError):
            rt.reload_policies(bad)
        wf.go.set()
        with pytest.raises(GovernanceUnavailable) as info:
            await handle.result()
    assert_stopped(info.value, GovernanceUnavailable, "policy.reload", wf)
    assert_evidence(handle.evidence_path, key, check="policy.reload")


async def test_explicit_reload_of_a_missing_file_with_keep_last_good_keeps_running(
    wf: Workflow, evidence: Path, tmp_path: Path
) -> None:
    """keep_last_good_policy: the refused reload raises, the previous set stays in force."""
    key = SigningKey.generate()
    async with runtime(evidence, key=key, keep_last_good_policy=True) as rt:
        handle = await wf.start(rt)
        with pytest.raises(PolicyError):
            rt.reload_policies(tmp_path / "missing.toml")
        wf.go.set()
        result = await handle.result()
    assert result[:2] == ["w1", "w2"]
    assert sorted(wf.after) == ["w1:after", "w1:helper", "w2:after", "w2:helper"]
    assert_evidence(handle.evidence_path, key, check=None, status="ok")


async def test_watched_file_garbage_with_keep_last_good_is_still_an_attestation_stop(
    wf: Workflow, evidence: Path, policy_file: Path
) -> None:
    """keep_last_good keeps the set in force, but an overwritten attested file stops runs."""
    key = SigningKey.generate()
    async with runtime(
        evidence,
        key=key,
        policies=policy_file,
        watch_policies=True,
        keep_last_good_policy=True,
        attest_interval=0.01,
    ) as rt:
        handle = await wf.start(rt)
        _break(policy_file, "garbage")
        with pytest.raises(AttestationMismatch) as info:
            await handle.result()
        wf.go.set()
    assert_stopped(info.value, AttestationMismatch, "attestation.policy", wf)
    assert_evidence(handle.evidence_path, key, check="attestation.policy")


async def test_a_crash_inside_a_watched_reload_is_a_watchdog_crash_and_stops_the_run(
    wf: Workflow, evidence: Path, policy_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The watched reload runs in a task of the watchdog's: a fault there that is not a
    refused policy fails closed like any watchdog crash (``watchdog.crashed``)."""
    key = SigningKey.generate()

    def broken_load(cls: type[PolicySet], path: object) -> PolicySet:
        raise RuntimeError("injected reload fault")

    async with runtime(evidence, key=key, policies=policy_file, watch_policies=True) as rt:
        handle = await wf.start(rt)
        monkeypatch.setattr(PolicySet, "load", classmethod(broken_load))
        _break(policy_file, "valid-edit")
        with pytest.raises(GovernanceUnavailable) as info:
            await handle.result()
        wf.go.set()
    assert_stopped(info.value, GovernanceUnavailable, "watchdog.crashed", wf)
    assert "injected reload fault" in str(info.value)
    assert_evidence(handle.evidence_path, key, check="watchdog.crashed")
