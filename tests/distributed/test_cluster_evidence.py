"""One verifiable run from many workers: export from the backend, verify with one key."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import anyio
import asyncpg
import pytest

from tenure import Runtime
from tenure.crypto import generate_key_files, load_public_key
from tenure.evidence._certs import CERT_NAME, certify
from tenure.evidence._cluster import verify_cluster
from tenure.runtime.backends._pg import upgrade

from ._pg import PgServer
from .conftest import ROOT, WorkerProcess, start_worker
from .pool_agents import crowd

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


async def _make_export(root: Path, url: str) -> tuple[Path, Path, str]:
    await upgrade(url)
    operator = root / "operator"
    generate_key_files(operator)
    _certified_key(root / "api", "api-server", operator / "tenure.key")
    started: list[WorkerProcess] = []
    try:
        for name in ("w1", "w2"):
            _certified_key(root / name / "key", name, operator / "tenure.key")
            # Two parts at a time each: the four held parts are spread over both workers.
            started.append(start_worker(url, root / name, name, concurrency=2))
        policy = root / "allow.toml"
        policy.write_text(ALLOW)
        key = root / "api" / "tenure.key"
        markers = [root / f"held-{i}" for i in range(4)]
        release = root / "release"
        async with Runtime(backend=url, evidence_dir=root / "runs", policies=policy, key=key) as rt:
            handle = await rt.start(
                crowd, [str(m) for m in markers], str(release), principal="alice", ttl=60
            )
            with anyio.fail_after(60):
                while True:  # the workers' files: polled
                    if all(m.exists() for m in markers):
                        break
                    await anyio.sleep(0.02)
                release.write_text("go\n")
                await handle.result()
    finally:
        for worker in started:
            worker.stop()
    out = root / "export"
    done = await anyio.to_thread.run_sync(
        tenure_cli, "export", handle.run_id, "--backend", url, "--out", str(out)
    )
    assert done.returncode == 0, done.stderr
    assert "5 segment(s)" in done.stdout
    return out, operator / "tenure.pub", handle.run_id


@pytest.fixture(scope="module")
def made(pg_cluster: PgServer, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """One run of the planner on two certified workers, exported once for every test here:
    (export dir, operator.pub, run id). Each test works on its own copy."""
    root = tmp_path_factory.mktemp("cluster")
    database = "cluster_export"

    async def make() -> tuple[Path, Path, str]:
        admin = await asyncpg.connect(pg_cluster.dsn)
        try:
            await admin.execute(f'CREATE DATABASE "{database}"')
        finally:
            await admin.close()
        return await _make_export(root, pg_cluster.url(database))

    return anyio.run(make)


@pytest.fixture
def exported(made: tuple[Path, Path, str], tmp_path: Path) -> tuple[Path, Path, str]:
    """A private copy of the export (attacks tamper with it)."""
    out, operator_pub, run_id = made
    copy = tmp_path / "export"
    shutil.copytree(out, copy)
    return copy, operator_pub, run_id


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


def _first_child(out: Path) -> Path:
    return next(p for p in sorted(out.iterdir()) if p.is_dir() and p.name.count(".") == 2)


def _verify_in_a_thread(out: Path, operator_pub: Path) -> list[str]:
    """verify_cluster's failures; bounded in time, so a verifier that blocks fails the test
    (in its own thread: the loop and the test's timeout stay in charge)."""

    async def go() -> list[str]:
        with anyio.fail_after(30):
            report = await anyio.to_thread.run_sync(
                verify_cluster, out, load_public_key(operator_pub), abandon_on_cancel=True
            )
        assert report.verdict == "invalid"
        return report.failures

    return anyio.run(go)


@pytest.mark.parametrize("name", ["ledger.jsonl", "tenure.pub", CERT_NAME])
def test_a_segment_file_replaced_by_a_fifo_is_refused_without_blocking(
    exported: tuple[Path, Path, str], name: str
) -> None:
    """The attack: a child segment's ledger, key copy or certificate is a FIFO with no
    writer; reading it would block the verifier for good. It is refused by file type, and
    the failure names the segment and the file."""
    out, operator_pub, _ = exported
    child = _first_child(out)
    (child / name).unlink()
    os.mkfifo(child / name)
    failures = _verify_in_a_thread(out, operator_pub)
    assert any(
        f.startswith(f"segment {child.name}:") and "FIFO" in f and name in f for f in failures
    ), failures


def test_an_index_that_is_a_fifo_or_huge_is_refused_before_it_is_parsed(
    exported: tuple[Path, Path, str],
) -> None:
    """The attack: ``segments.json`` as a FIFO, then as a sparse file just past the 4 MiB an
    index may hold: both refused as an index failure, nothing read past the bound."""
    out, operator_pub, _ = exported
    index = out / "segments.json"
    index.unlink()
    os.mkfifo(index)
    failures = _verify_in_a_thread(out, operator_pub)
    assert len(failures) == 1 and failures[0].startswith("index:") and "FIFO" in failures[0]
    index.unlink()
    with index.open("wb") as f:
        f.truncate((4 << 20) + 1)
    failures = _verify_in_a_thread(out, operator_pub)
    assert len(failures) == 1 and "larger than the 4194304 bytes" in failures[0], failures
