"""Shared copies (``tenure.pub``, a shared attestation): later run directories hard-link the
first copy, and never link anything this process did not write."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from tenure import Context, Runtime, SigningKey, agent
from tenure.crypto import load_public_key
from tenure.evidence import verify_run
from tenure.evidence._copies import SharedCopy
from tenure.policies import PolicySet

DATA = b"-----BEGIN PUBLIC KEY-----\nshared bytes\n-----END PUBLIC KEY-----\n"


def _write_new(target: Path, data: bytes) -> None:
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _dirs(tmp_path: Path, n: int) -> list[Path]:
    dirs = [tmp_path / f"run_{i}" for i in range(n)]
    for d in dirs:
        d.mkdir()
    return dirs


def test_later_copies_are_hard_links_to_the_first(tmp_path: Path) -> None:
    copy = SharedCopy(DATA)
    a, b, c = (d / "tenure.pub" for d in _dirs(tmp_path, 3))
    assert [copy.place(p, _write_new) for p in (a, b, c)] == [False, True, True]
    assert a.stat().st_ino == b.stat().st_ino == c.stat().st_ino
    assert a.read_bytes() == b.read_bytes() == c.read_bytes() == DATA


def test_a_source_replaced_by_a_symlink_is_never_linked(tmp_path: Path) -> None:
    """The attacker swaps the first copy for a symlink to a file of their choosing: the next
    copy is written afresh (a regular file with the right bytes), not the attacker's link."""
    copy = SharedCopy(DATA)
    first, second = (d / "tenure.pub" for d in _dirs(tmp_path, 2))
    copy.place(first, _write_new)
    chosen = tmp_path / "attacker.pem"
    chosen.write_bytes(b"the attacker's key")
    first.unlink()
    first.symlink_to(chosen)
    assert copy.place(second, _write_new) is False
    assert not second.is_symlink() and second.read_bytes() == DATA
    assert chosen.read_bytes() == b"the attacker's key" and first.is_symlink()


@pytest.mark.parametrize("payload", [b"x" * len(DATA), b"a different length"])
def test_a_source_rewritten_in_place_is_never_linked(tmp_path: Path, payload: bytes) -> None:
    """The first copy's bytes are changed (same size or not): its modification time or size
    no longer match what was written, so the next copy is written afresh."""
    copy = SharedCopy(DATA)
    first, second, third = (d / "tenure.pub" for d in _dirs(tmp_path, 3))
    copy.place(first, _write_new)
    st = first.stat()
    first.write_bytes(payload)
    os.utime(first, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert copy.place(second, _write_new) is False
    assert second.read_bytes() == DATA and second.stat().st_ino != first.stat().st_ino
    assert copy.place(third, _write_new) is True  # the fresh copy is the new source
    assert third.stat().st_ino == second.stat().st_ino


def test_a_deleted_source_or_a_refused_link_writes_afresh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = SharedCopy(DATA)
    first, second, third = (d / "tenure.pub" for d in _dirs(tmp_path, 3))
    copy.place(first, _write_new)
    first.unlink()
    assert copy.place(second, _write_new) is False and second.read_bytes() == DATA

    def refused(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", refused)
    assert copy.place(third, _write_new) is False and third.read_bytes() == DATA


@agent
async def _quick(ctx: Context) -> int:
    return 1


async def test_runs_of_a_runtime_share_their_key_and_attestation_copies_and_each_verifies(
    tmp_path: Path,
) -> None:
    key = SigningKey.generate()
    evidence = tmp_path / "runs"
    policy = PolicySet.from_text(
        'version = 1\ndefault = "deny"\n[[rules]]\nid = "a"\neffect = "allow"\n'
    )
    async with Runtime(policies=policy, evidence_dir=evidence, key=key) as rt:
        handles = []
        for _ in range(3):  # one after another (runs closing at once may each write a copy)
            handles.append(await rt.start(_quick, principal="alice"))
            assert await handles[-1].result() == 1
    dirs = [h.evidence_path for h in handles]
    for name in ("tenure.pub", "attestation.intoto.json"):
        assert len({(d / name).stat().st_ino for d in dirs}) == 1, name
    assert load_public_key(dirs[2] / "tenure.pub") == key.public_key
    for d in dirs:
        rep = verify_run(d, key.public_key)
        assert rep.ok and rep.verdict == "verified" and rep.warnings == [], rep.failure_line()
