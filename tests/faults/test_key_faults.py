"""Signing key faults: the key file missing, unreadable or corrupt at start and at renewal."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tenure import GovernanceUnavailable, GovernanceViolation, SignatureInvalid
from tenure.crypto import PRIVATE_KEY_NAME, generate_key_files
from tests.faults.conftest import Workflow, assert_evidence, assert_stopped, runtime


def _break(path: Path, fault: str) -> None:
    if fault == "missing":
        path.unlink()
    elif fault == "unreadable":  # tests may run as root: a directory is unreadable as a file
        path.unlink()
        path.mkdir()
    elif fault == "corrupt":
        path.write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    elif fault == "other-key":
        shutil.rmtree(path.parent)
        generate_key_files(path.parent)
    else:
        raise AssertionError(fault)


def _exists(path: Path) -> bool:
    return path.exists()


@pytest.mark.parametrize("fault", ["missing", "unreadable", "corrupt"])
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
