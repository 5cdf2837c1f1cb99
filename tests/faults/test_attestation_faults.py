"""Attestation faults: an agent's module file rewritten while a run is live."""

from __future__ import annotations

import errno
import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tenure import AttestationMismatch, GovernanceUnavailable, SigningKey
from tenure.evidence import _statement, verify_run
from tests.faults.conftest import Workflow, assert_evidence, assert_stopped, records, runtime

PLUGIN = """
from tenure import Context, agent


@agent(scopes={"act"})
async def plugin(ctx: Context, x: int) -> int:
    return x + 1
"""


def _run_dirs(evidence: Path) -> list[Path]:
    return [d for d in evidence.iterdir() if d.name.startswith("run_")]


def _import(path: Path) -> ModuleType:
    name = f"faults_plugin_{abs(hash(path))}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("detect", ["check_attestation", "watchdog"])
async def test_agent_module_rewritten_mid_run_stops_it(
    detect: str, wf: Workflow, tmp_path: Path, evidence: Path
) -> None:
    """The code of every registered agent is attested; a rewritten file is a mismatch."""
    path = tmp_path / "faults_plugin.py"
    path.write_text(PLUGIN)
    module = _import(path)
    key = SigningKey.generate()
    interval = 0.01 if detect == "watchdog" else 3600.0
    try:
        async with runtime(evidence, key=key, attest_interval=interval) as rt:
            handle = await wf.start(rt)
            path.write_text(PLUGIN.replace("x + 1", "x + 1000  # rewritten"))
            if detect == "check_attestation":
                rt.check_attestation()
                assert handle._run.stop is not None  # synchronous: stopped on return
                wf.go.set()
            with pytest.raises(AttestationMismatch) as info:
                await handle.result()
            wf.go.set()
    finally:
        sys.modules.pop(module.__name__, None)
    assert_stopped(info.value, AttestationMismatch, "attestation.code", wf)
    assert str(path) in str(info.value)
    assert_evidence(handle.evidence_path, key, check="attestation.code")


async def test_attestation_that_cannot_be_recorded_refuses_the_run_before_any_step(
    wf: Workflow, evidence: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Disk full while recording the attestation: ``start`` raises, nothing runs, no fd
    leaks, and nothing of the run reached the ledger (run.start goes with it)."""
    real_write = os.write
    failed: list[int] = []

    def full(fd: int, data: Any) -> int:
        if b'"kind":"attestation"' in bytes(data):
            failed.append(fd)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr("tenure.evidence._ledger.os.write", full)
    async with runtime(evidence) as rt:
        with pytest.raises(GovernanceUnavailable) as info:
            await wf.start(rt)
        assert rt._runs == {}
    monkeypatch.undo()
    assert info.value.check == "ledger.append"
    assert "No space left on device" in str(info.value)
    assert wf.effects == [] and wf.run is None
    [run_dir] = _run_dirs(evidence)
    assert records(run_dir) == []  # nothing recorded, nothing ran
    with pytest.raises(OSError):
        os.fstat(failed[0])  # the ledger's file was released


async def test_attestation_file_is_written_out_at_close_and_matches_the_ledger_copy(
    wf: Workflow, evidence: Path
) -> None:
    """The ledger's attestation record reaches the OS with run.start; the file in-toto tools
    read is the same envelope, written out when the run's evidence is committed."""
    key = SigningKey.generate()
    async with runtime(evidence, key=key) as rt:
        handle = await wf.start(rt)
        [run_dir] = _run_dirs(evidence)
        assert not (run_dir / "attestation.intoto.json").exists()  # not on the loop's path
        assert [r["kind"] for r in records(run_dir)][:2] == ["run.start", "attestation"]
        wf.go.set()
        await handle.result()
    [ledger_copy] = [r for r in records(run_dir) if r["kind"] == "attestation"]
    written = json.loads((run_dir / "attestation.intoto.json").read_text())
    assert written == ledger_copy["envelope"]
    rep = assert_evidence(run_dir, key, check=None, status="ok")
    assert rep.warnings == []


async def test_attestation_file_that_cannot_be_written_at_close_fails_the_run_not_its_ledger(
    wf: Workflow, evidence: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Disk full writing attestation.intoto.json at close: the outcome is the failure (the
    run is not reported ok), while its ledger, the attestation in it, still verifies."""
    real_open = os.open

    def full(path: Any, flags: int, mode: int = 0o777) -> int:
        if str(path).endswith(_statement.ATTESTATION_FILE):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, flags, mode)

    monkeypatch.setattr("tenure.evidence._statement.os.open", full)
    key = SigningKey.generate()
    async with runtime(evidence, key=key) as rt:
        handle = await wf.start(rt)
        wf.go.set()
        with pytest.raises(GovernanceUnavailable) as info:
            await handle.result()
    monkeypatch.undo()
    assert info.value.check == "attestation.write"
    assert "No space left on device" in str(info.value)
    [run_dir] = _run_dirs(evidence)
    assert not (run_dir / "attestation.intoto.json").exists()
    rep = assert_evidence(run_dir, key, check=None, status="ok")
    assert [w.code for w in rep.warnings] == ["attestation.file_missing"]


async def test_runs_with_unchanged_code_share_one_statement_and_each_verifies_alone(
    wf: Workflow, evidence: Path, tmp_path: Path
) -> None:
    """One statement signed for both runs (the manifest did not change); each run's own
    ledger binds it (run.start names its digest, the ledger copy is signed with the
    records), so each run directory, copied out on its own, verifies offline."""
    key = SigningKey.generate()
    async with runtime(evidence, key=key) as rt:
        for name in ("a", "b"):
            await rt.run(wf.helper, name, principal="alice", scopes={"act"})
    runs = _run_dirs(evidence)
    starts = [next(r for r in records(d) if r["kind"] == "run.start") for d in runs]
    assert len(runs) == 2 and starts[0]["attestation"] == starts[1]["attestation"]
    for run_dir in runs:
        alone = tmp_path / "alone" / run_dir.name
        shutil.copytree(run_dir, alone)
        rep = verify_run(alone, key.public_key, witness_dir=evidence / ".witness")
        assert rep.ok and rep.verdict == "verified", rep.failure_line()
        assert rep.warnings == []
