"""Attestation faults: an agent's module file rewritten while a run is live."""

from __future__ import annotations

import errno
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tenure import AttestationMismatch, GovernanceUnavailable, SigningKey
from tenure.evidence import _statement
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


async def test_attestation_that_cannot_be_written_refuses_the_run_before_any_step(
    wf: Workflow, evidence: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Disk full while writing the attestation: ``start`` raises, nothing runs, no fd leaks."""
    real_open = os.open

    def full(path: Any, flags: int, mode: int = 0o777) -> int:
        if str(path).endswith(_statement.ATTESTATION_FILE):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, flags, mode)

    monkeypatch.setattr("tenure.evidence._statement.os.open", full)
    async with runtime(evidence) as rt:
        with pytest.raises(GovernanceUnavailable) as info:
            await wf.start(rt)
        assert rt._runs == {}
    assert info.value.check == "attestation.write"
    assert "No space left on device" in str(info.value)
    assert wf.effects == [] and wf.run is None
    [run_dir] = _run_dirs(evidence)
    assert records(run_dir) == []  # nothing recorded, nothing ran
