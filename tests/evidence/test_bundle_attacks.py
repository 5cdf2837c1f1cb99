"""Audit bundles handed to a verifier by someone else: each lie in a manifest or archive is
refused as ``bundle.manifest``, names what is wrong, and leaves the run it came from as it was.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from typer.testing import CliRunner

from tenure.cli import app
from tenure.evidence import verify_run
from tests.support.demo_runs import DemoRuns

Manifest = dict[str, Any]


@pytest.fixture
def runs(demo_runs: DemoRuns, tmp_path: Path) -> DemoRuns:
    return demo_runs.copy_to(tmp_path)


def _export(runs: DemoRuns, out: Path) -> Path:
    result = CliRunner().invoke(
        app, ["export", str(runs.research), "--out", str(out), "--key", str(runs.public_key)]
    )
    assert result.exit_code == 0, result.stderr
    return out


def _fingerprint(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run.iterdir()) if p.is_file()}


def _refused(bundle: Path, runs: DemoRuns, why: str) -> None:
    rep = verify_run(bundle, runs.public_key)
    assert rep.verdict == "invalid"
    assert rep.failures[0].code == "bundle.manifest", rep.failures
    assert why in rep.failures[0].message, rep.failures[0].message


def _with_files(change: Callable[[dict[str, Any], str], None]) -> Callable[[Manifest, str], None]:
    def edit(manifest: Manifest, run_id: str) -> None:
        change(manifest["files"], run_id)

    return edit


MANIFEST_LIES: dict[str, tuple[Callable[[Manifest, str], None], str]] = {
    "escaping_path": (
        _with_files(lambda f, r: f.__setitem__("../outside", "sha256:00")),
        "is not a plain relative path",
    ),
    "absolute_path": (
        _with_files(lambda f, r: f.__setitem__("/etc/passwd", "sha256:00")),
        "is not a plain relative path",
    ),
    "digest_not_a_string": (
        _with_files(lambda f, r: f.__setitem__(f"{r}/checkpoint", 7)),
        "is not a string",
    ),
    "ledger_not_listed": (
        _with_files(lambda f, r: f.pop(f"{r}/ledger.jsonl")),
        "does not list",
    ),
    "wrong_digest": (
        _with_files(lambda f, r: f.__setitem__(f"{r}/ledger.jsonl", "sha256:" + "0" * 64)),
        "does not match the manifest's",
    ),
    "listed_file_missing": (
        _with_files(lambda f, r: f.__setitem__(f"{r}/extra.json", "sha256:" + "0" * 64)),
        "extra.json",
    ),
    "two_run_segments": (
        lambda m, r: m["runs"].append(dict(m["runs"][0])),
        "holds 2 run segments",
    ),
    "dir_not_the_run": (
        lambda m, r: m["runs"][0].__setitem__("dir", "elsewhere"),
        "dir equal to it",
    ),
    "no_runs": (lambda m, r: m.__setitem__("runs", []), "'runs' must be a non-empty list"),
    "other_format": (
        lambda m, r: m.__setitem__("format", "tenure-audit-bundle/9"),
        "not a tenure-audit-bundle/1 manifest",
    ),
}


@pytest.mark.parametrize("lie", sorted(MANIFEST_LIES))
def test_a_manifest_that_lies_is_refused_and_the_source_run_is_unchanged(
    runs: DemoRuns, tmp_path: Path, lie: str
) -> None:
    before = _fingerprint(runs.research)
    bundle = _export(runs, tmp_path / "bundle")
    path = bundle / "manifest.json"
    manifest = json.loads(path.read_text())
    edit, why = MANIFEST_LIES[lie]
    edit(manifest, runs.research.name)
    path.write_text(json.dumps(manifest))
    _refused(bundle, runs, why)
    assert _fingerprint(runs.research) == before
    assert verify_run(runs.research, runs.public_key).ok


def test_a_manifest_that_is_a_fifo_is_refused_without_blocking(
    runs: DemoRuns, tmp_path: Path
) -> None:
    bundle = _export(runs, tmp_path / "bundle")
    (bundle / "manifest.json").unlink()
    os.mkfifo(bundle / "manifest.json")
    _refused(bundle, runs, "FIFO")


async def test_an_archive_that_is_a_fifo_is_refused_without_blocking(
    runs: DemoRuns, tmp_path: Path
) -> None:
    """The attack: ``bundle.tar.gz`` is a FIFO no one writes; opening it for reading would
    block the verifier for good. It is refused by its file type."""
    fifo = tmp_path / "bundle.tar.gz"
    os.mkfifo(fifo)
    with anyio.fail_after(30):
        rep = await anyio.to_thread.run_sync(
            verify_run, fifo, runs.public_key, abandon_on_cancel=True
        )
    assert rep.verdict == "invalid" and rep.failures[0].code == "bundle.manifest"
    assert "FIFO" in rep.failures[0].message


def _archive(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, fileobj=io.BytesIO(data))
    return path


def test_an_archive_of_two_folders_is_refused(runs: DemoRuns, tmp_path: Path) -> None:
    evil = _archive(tmp_path / "two.tar.gz", [("a/manifest.json", b"{}"), ("b/x", b"")])
    _refused(evil, runs, "a bundle holds one folder")


def test_an_archive_of_more_files_than_a_bundle_holds_is_refused(
    runs: DemoRuns, tmp_path: Path
) -> None:
    evil = _archive(tmp_path / "many.tar.gz", [(f"b/f{i}", b"") for i in range(65)])
    _refused(evil, runs, "at most 64 regular files")


def test_a_file_that_is_not_an_archive_is_refused_by_name(runs: DemoRuns, tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not gzip at all")
    _refused(junk, runs, "not a readable .tar.gz")
    other = tmp_path / "bundle.zip"
    other.write_bytes(b"PK")
    _refused(other, runs, "neither a run directory nor a .tar.gz audit bundle")


def test_an_archived_bundle_verifies_and_a_tampered_copy_inside_does_not(
    runs: DemoRuns, tmp_path: Path
) -> None:
    archive = _export(runs, tmp_path / "b.tar.gz")
    assert verify_run(archive, runs.public_key).ok
    with tarfile.open(archive, "r:gz") as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar if m.isfile()]  # type: ignore[union-attr]
    ledger = next(i for i, (n, _) in enumerate(members) if n.endswith("ledger.jsonl"))
    name, data = members[ledger]
    members[ledger] = (name, data.replace(b'"alice"', b'"mallo"', 1))
    _refused(_archive(tmp_path / "t.tar.gz", members), runs, "does not match the manifest's")
