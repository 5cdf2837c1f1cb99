"""Signing key faults: the key file missing, unreadable or corrupt at start and at renewal."""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from tenure import GovernanceUnavailable, GovernanceViolation, SignatureInvalid, SigningKey
from tenure.crypto import PRIVATE_KEY_NAME, generate_key_files
from tenure.runtime.kernel._authority import LeaseAuthority
from tenure.runtime.kernel._lease import LeaseClaims
from tests.faults.conftest import Workflow, assert_evidence, assert_stopped, records, runtime
from tests.support.evidence import issued_leases


def _break(path: Path, fault: str) -> None:
    if fault == "missing":
        path.unlink()
    elif fault == "unreadable":  # tests may run as root: a directory is unreadable as a file
        path.unlink()
        path.mkdir()
    elif fault == "fifo":  # an open for reading would block until a writer comes
        path.unlink()
        os.mkfifo(path)
    elif fault == "device":  # never ends
        path.unlink()
        path.symlink_to("/dev/zero")
    elif fault == "corrupt":
        path.write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    elif fault == "other-key":
        shutil.rmtree(path.parent)
        generate_key_files(path.parent)
    else:
        raise AssertionError(fault)


def _exists(path: Path) -> bool:
    return path.exists()


@pytest.mark.parametrize("fault", ["missing", "unreadable", "corrupt", "fifo", "device"])
async def test_bad_key_file_at_start_refuses_to_open_the_runtime(
    fault: str, tmp_path: Path, evidence: Path
) -> None:
    """Runtime(key=path): a bad key file is key.load at ``async with``, never a fresh key."""
    path = tmp_path / "keys" / PRIVATE_KEY_NAME
    generate_key_files(path.parent)
    _break(path, fault)
    rt = runtime(evidence, key=path)
    with pytest.raises(GovernanceUnavailable) as info:
        async with rt:
            raise AssertionError("the runtime opened with a bad key file")
    assert info.value.check == "key.load"
    assert str(path) in str(info.value)
    assert not _exists(evidence)  # nothing ran, nothing was recorded under another key


@pytest.mark.parametrize(
    ("fault", "cls"),
    [
        ("missing", GovernanceUnavailable),
        ("unreadable", GovernanceUnavailable),
        ("corrupt", GovernanceUnavailable),
        ("fifo", GovernanceUnavailable),
        ("device", GovernanceUnavailable),
        ("other-key", SignatureInvalid),
    ],
)
async def test_key_file_broken_mid_run_stops_it_before_the_next_renewal(
    fault: str, cls: type[GovernanceViolation], wf: Workflow, tmp_path: Path, evidence: Path
) -> None:
    """The watchdog's key-file guard runs before renewals: key.renewal, no lease renewed."""
    path = tmp_path / "keys" / PRIVATE_KEY_NAME
    key = generate_key_files(path.parent)
    async with runtime(evidence, key=path, lease_seconds=0.3, renew_fraction=0.5) as rt:
        handle = await wf.start(rt)
        _break(path, fault)
        with pytest.raises(cls) as info:
            await handle.result()
        wf.go.set()
    assert_stopped(info.value, cls, "key.renewal", wf)
    rep = assert_evidence(handle.evidence_path, key, check="key.renewal")
    assert rep.key_source == "given"


async def test_key_file_rewritten_with_the_same_key_does_not_stop_the_run(
    wf: Workflow, tmp_path: Path, evidence: Path
) -> None:
    """Touching or rewriting the key file with the same key is not a fault."""
    path = tmp_path / "keys" / PRIVATE_KEY_NAME
    key = generate_key_files(path.parent)
    async with runtime(evidence, key=path, lease_seconds=0.3, renew_fraction=0.5) as rt:
        assert rt._watchdog is not None
        handle = await wf.start(rt)
        data = path.read_bytes()
        path.unlink()
        path.write_bytes(data)  # new inode, same key
        passes = rt._watchdog.passes
        while rt._watchdog.passes < passes + 2:
            await wf.run_turn()
        wf.go.set()
        result = await handle.result()
    assert result[:2] == ["w1", "w2"]
    assert_evidence(handle.evidence_path, key, check=None, status="ok")


async def test_a_lease_batch_that_cannot_be_signed_stops_the_run_and_no_lease_of_it_runs(
    wf: Workflow, evidence: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The signer fails for the batch of the helpers' leases: lease.signature stops the run,
    neither helper's body runs, no step.start names them, and the evidence verifies."""
    real = LeaseAuthority.sign_batch

    def failing(self: LeaseAuthority, run_id: str, drafts: Sequence[LeaseClaims]) -> Any:
        if any(d.sub.endswith(":helper") for d in drafts):
            raise OSError(errno.EIO, "signing device gone")
        return real(self, run_id, drafts)

    monkeypatch.setattr(LeaseAuthority, "sign_batch", failing)
    key = SigningKey.generate()
    async with runtime(evidence, key=key) as rt:
        handle = await wf.start(rt)
        await wf.ready.wait()
        wf.go.set()
        with pytest.raises(GovernanceUnavailable) as info:
            await handle.result()
    assert info.value.check == "lease.signature"
    assert "signing device gone" in info.value.reason
    assert not [e for e in wf.effects if e.endswith(":helper")]
    recs = records(handle.evidence_path)
    assert not [r for r in recs if r["kind"] == "step.start" and r["target"] == "helper"]
    assert not [c for c in issued_leases(recs) if c["sub"].endswith(":helper")]
    assert_evidence(handle.evidence_path, key, check="lease.signature")
