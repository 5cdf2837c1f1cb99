"""One verifiable run from many workers: export from the backend, verify with one key."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from tenure import Runtime
from tenure.crypto import default_key_dir, generate_key_files, load_public_key
from tenure.evidence._certs import CERT_NAME, certify
from tenure.evidence._cluster import verify_cluster
from tenure.runtime.backends._pg import upgrade

from .conftest import ROOT, WorkerProcess
from .pool_agents import planner

ALLOW = 'version = 1\ndefault = "deny"\n\n[[rules]]\nid = "all"\neffect = "allow"\n'


def tenure_cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tenure", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=os.environ.copy(),
        check=False,
    )


def _certified_key(directory: Path, name: str, operator_key: Path) -> None:
    """A key pair in ``directory`` with the operator's certificate beside it (the CLI)."""
    generate_key_files(directory)
    done = tenure_cli(
        "keys", "certify", str(directory / "tenure.pub"), "--name", name, "--by", str(operator_key)
    )
    assert done.returncode == 0, done.stderr
    assert (directory / CERT_NAME).is_file()


@pytest.fixture
async def exported(
    pg_url: str, tmp_path: Path, workers: Callable[..., WorkerProcess]
) -> tuple[Path, Path, str]:
    """A run of the planner on two certified workers, exported: (dir, operator.pub, run id)."""
    await upgrade(pg_url)
    operator = tmp_path / "operator"
    generate_key_files(operator)
    _certified_key(default_key_dir(), "api-server", operator / "tenure.key")
    for name in ("w1", "w2"):
        _certified_key(tmp_path / name / "key", name, operator / "tenure.key")
        workers(pg_url, name)
    policy = tmp_path / "allow.toml"
    policy.write_text(ALLOW)
    async with Runtime(backend=pg_url, evidence_dir=tmp_path / "runs", policies=policy) as rt:
        topics = ["a", "b", "c", "d"]
        handle = await rt.start(planner, topics, principal="alice", scopes={"notes:read"}, ttl=60)
        with anyio.fail_after(60):
            await handle.result()
    out = tmp_path / "export"
    done = await anyio.to_thread.run_sync(
        tenure_cli, "export", handle.run_id, "--backend", pg_url, "--out", str(out)
    )
    assert done.returncode == 0, done.stderr
    assert "5 segment(s)" in done.stdout
    return out, operator / "tenure.pub", handle.run_id


async def test_an_exported_run_of_many_workers_verifies_with_the_operator_key_alone(
    exported: tuple[Path, Path, str],
) -> None:
    out, operator_pub, run_id = exported
    done = await anyio.to_thread.run_sync(
        tenure_cli, "verify", str(out), "--key", str(operator_pub)
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"run {run_id}: verified (5 segments)" in done.stdout
    index = json.loads((out / "segments.json").read_text())
    assert {s["name"] for s in index["segments"][1:]} == {"w1", "w2"}


async def test_a_segment_signed_by_an_uncertified_key_is_rejected(
    exported: tuple[Path, Path, str], tmp_path: Path
) -> None:
    """The attack: a worker key the operator never certified. Removing the certificate (or
    certifying the segment's key with another operator key) makes the run invalid."""
    out, operator_pub, _ = exported
    child = next(p for p in sorted(out.iterdir()) if p.is_dir() and p.name.count(".") == 2)
    rogue = tmp_path / "rogue"
    key = generate_key_files(rogue)
    forged = certify(key, load_public_key(child / "tenure.pub"), "w1")
    (child / CERT_NAME).write_text(json.dumps(forged))
    report = verify_cluster(out, load_public_key(operator_pub))
    assert report.verdict == "invalid"
    assert any(child.name in f for f in report.failures)
    (child / CERT_NAME).unlink()
    report = verify_cluster(out, load_public_key(operator_pub))
    assert report.verdict == "invalid"
    assert any("has no certificate from the operator" in f for f in report.failures)


async def test_a_child_segment_cut_short_no_longer_matches_what_its_parent_committed_to(
    exported: tuple[Path, Path, str],
) -> None:
    """The attack: drop a child's tail and its last checkpoint (a rollback of one worker's
    evidence). The child alone may still verify as incomplete; the parent's
    ``delegation.returned`` names the child's final size and checkpoint, so the run does not."""
    out, operator_pub, _ = exported
    child = next(p for p in sorted(out.iterdir()) if p.is_dir() and p.name.count(".") == 2)
    lines = (child / "ledger.jsonl").read_bytes().splitlines(keepends=True)
    (child / "ledger.jsonl").write_bytes(b"".join(lines[:-2]))
    report = verify_cluster(out, load_public_key(operator_pub))
    assert report.verdict == "invalid"


async def test_a_segment_moved_into_another_run_is_rejected(
    exported: tuple[Path, Path, str], tmp_path: Path
) -> None:
    """The attack: splice a segment of this run into an index claiming another run id."""
    out, operator_pub, run_id = exported
    spliced = tmp_path / "spliced"
    shutil.copytree(out, spliced)
    index = json.loads((spliced / "segments.json").read_text())
    index["run"] = "run_0000000000000000"
    (spliced / "segments.json").write_text(json.dumps(index))
    report = verify_cluster(spliced, load_public_key(operator_pub))
    assert report.verdict == "invalid"
    assert run_id != index["run"]
