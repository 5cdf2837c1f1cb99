"""The auditor's commands: ``prove``, ``verify-proof``, ``export`` (+ ``verify`` of a bundle),
``runs`` and ``--version``; each exit code and message, each refusal named after the attack."""

from __future__ import annotations

import base64
import json
import shutil
import tarfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tenure import __version__
from tenure.cli import app
from tenure.evidence import verify_run
from tenure.evidence._ledger_io import LedgerConfig
from tenure.evidence._note import sign_checkpoint
from tenure.evidence._proof import prove_inclusion
from tests.support.demo_runs import DemoRuns
from tests.support.run_builder import build_run


def _cli(*args: str | Path | int) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def runs(demo_runs: DemoRuns, tmp_path: Path) -> DemoRuns:
    return demo_runs.copy_to(tmp_path)


def _size(run: Path) -> int:
    return int((run / "checkpoint").read_text().split("\n")[1])


# --- proofs -----------------------------------------------------------------------------------


def test_every_records_inclusion_proof_of_real_runs_verifies(
    runs: DemoRuns, tmp_path: Path
) -> None:
    for run in (runs.research, runs.revoked):
        lines = (run / "ledger.jsonl").read_bytes().splitlines()
        for n in range(_size(run)):
            proof = tmp_path / f"{run.name}-{n}.tlog-proof"
            code, _, err = _cli("prove", run, "--record", n, "--key", runs.public_key, "-o", proof)
            assert code == 0, err
            assert proof.read_text().startswith("c2sp.org/tlog-proof@v1\nextra ")
            record = tmp_path / "record.json"
            record.write_bytes(lines[n] + b"\n")
            code, out, err = _cli(
                "verify-proof", proof, "--key", runs.public_key, "--record", record
            )
            assert code == 0, err
            assert f"record {n} of run {run.name} is included" in out


def test_every_consistency_proof_of_a_run_with_many_checkpoints_verifies(tmp_path: Path) -> None:
    b = build_run(tmp_path, 12, config=LedgerConfig(checkpoint_every=5, checkpoint_interval=0))
    pub = tmp_path / "key.pub"
    pub.write_bytes(b.key.public_pem)
    sizes = [
        json.loads(line)["size"]
        for line in (b.run_dir / "ledger.jsonl").read_text().splitlines()
        if json.loads(line)["kind"] == "checkpoint"
    ]
    assert len(sizes) >= 5
    for old in [*sizes, _size(b.run_dir)]:
        proof = tmp_path / f"c{old}.proof"
        code, _, err = _cli("prove", b.run_dir, "--consistency", old, "--key", pub, "-o", proof)
        assert code == 0, err
        code, out, err = _cli("verify-proof", proof, "--key", pub)
        assert code == 0, err
        assert f"checkpoint of size {old} is a prefix of the one of size {_size(b.run_dir)}" in out


def test_consistency_from_a_size_never_signed_is_refused(tmp_path: Path) -> None:
    b = build_run(tmp_path, 3)
    code, _, err = _cli("prove", b.run_dir, "--consistency", 2)
    assert code == 2 and "no signed checkpoint of size 2" in err


def test_inclusion_proof_of_a_tampered_record_is_refused(runs: DemoRuns, tmp_path: Path) -> None:
    text = prove_inclusion(runs.research, 3)
    lines = text.split("\n")
    record = json.loads(base64.b64decode(lines[1][6:]))
    record["principal"] = "mallory"  # the record claims another principal
    lines[1] = "extra " + base64.b64encode(json.dumps(record).encode()).decode()
    proof = tmp_path / "tampered.tlog-proof"
    proof.write_text("\n".join(lines))
    code, _, err = _cli("verify-proof", proof, "--key", runs.public_key)
    assert code == 1 and err.startswith("INVALID proof: inclusion: proof gives root")


def test_inclusion_proof_against_a_different_record_file_is_refused(
    runs: DemoRuns, tmp_path: Path
) -> None:
    proof = tmp_path / "p.tlog-proof"
    proof.write_text(prove_inclusion(runs.research, 3))
    other = tmp_path / "other.json"
    other.write_bytes((runs.research / "ledger.jsonl").read_bytes().splitlines()[4])
    code, _, err = _cli("verify-proof", proof, "--key", runs.public_key, "--record", other)
    assert code == 1 and "not the record the proof carries" in err


def test_inclusion_proof_with_another_runs_checkpoint_is_refused(
    runs: DemoRuns, tmp_path: Path
) -> None:
    text = prove_inclusion(runs.research, 3)
    head = text[: text.index("\n\n") + 2]
    proof = tmp_path / "swapped.tlog-proof"
    proof.write_text(head + (runs.revoked / "checkpoint").read_text())
    code, _, err = _cli("verify-proof", proof, "--key", runs.public_key)
    assert code == 1 and "INVALID proof" in err
    code, _, err = _cli(
        "verify-proof", proof, "--key", runs.public_key, "--expect-run-id", runs.research.name
    )
    assert code == 1 and f"not '{runs.research.name}'" in err


def test_inclusion_proof_with_a_checkpoint_resigned_by_another_key_is_refused(
    runs: DemoRuns, tmp_path: Path
) -> None:
    from tenure.crypto import SigningKey

    text = prove_inclusion(runs.research, 3)
    origin, size, root = (runs.research / "checkpoint").read_text().split("\n")[:3]
    forged = sign_checkpoint(origin, int(size), base64.b64decode(root), SigningKey.generate())
    proof = tmp_path / "forged.tlog-proof"
    proof.write_text(text[: text.index("\n\n") + 2] + forged)
    code, _, err = _cli("verify-proof", proof, "--key", runs.public_key)
    assert code == 1 and "no signature by the trusted key" in err


def test_prove_refuses_evidence_that_does_not_verify(runs: DemoRuns) -> None:
    ledger = runs.research / "ledger.jsonl"
    ledger.write_bytes(ledger.read_bytes().replace(b'"alice"', b'"mallo"', 1))
    code, out, err = _cli("prove", runs.research, "--record", 0, "--key", runs.public_key)
    assert code == 1 and out == "" and "does not verify" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--record", "1", "--consistency", "1"], "exactly one of"),
        ([], "exactly one of"),
        (["--record", "100000"], "is not covered by the signed checkpoint"),
    ],
)
def test_prove_usage_errors_exit_2(runs: DemoRuns, args: list[str], message: str) -> None:
    code, _, err = _cli("prove", runs.research, *args, "--key", runs.public_key)
    assert code == 2 and message in err and err.count("\n") == 1


def test_verify_proof_of_a_missing_file_or_garbage_is_one_line(
    runs: DemoRuns, tmp_path: Path
) -> None:
    code, _, err = _cli("verify-proof", tmp_path / "none", "--key", runs.public_key)
    assert code == 2 and "no such file" in err
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\xff\xfe not a proof")
    code, _, err = _cli("verify-proof", garbage, "--key", runs.public_key)
    assert code == 1 and err.startswith("INVALID proof") and err.count("\n") == 1


# --- audit bundles ------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["bundle", "bundle.tar.gz"])
def test_exported_bundle_verifies_with_its_witness_and_no_rollback_warning(
    runs: DemoRuns, tmp_path: Path, suffix: str
) -> None:
    out = tmp_path / suffix
    code, stdout, err = _cli("export", runs.revoked, "--out", out, "--key", runs.public_key)
    assert code == 0, err
    assert f"run {runs.revoked.name}, verified" in stdout
    rep = verify_run(out, runs.public_key)
    assert rep.ok and rep.witness_source == "bundle" and rep.witness_size == rep.tree_size
    assert "witness.missing" not in rep.codes
    code, out_text, err = _cli("verify", out, "--key", runs.public_key)
    assert code == 0 and "verified" in out_text and "witness" not in err


def test_bundle_of_a_rolled_back_copy_is_refused_by_its_witness(
    runs: DemoRuns, tmp_path: Path
) -> None:
    out = tmp_path / "bundle"
    assert _cli("export", runs.research, "--out", out, "--key", runs.public_key)[0] == 0
    inner = out / runs.research.name
    lines = (inner / "ledger.jsonl").read_bytes().splitlines(keepends=True)
    (inner / "ledger.jsonl").write_bytes(b"".join(lines[:10]))
    (inner / "checkpoint").unlink()
    rep = verify_run(out, runs.public_key)
    assert rep.verdict == "invalid" and rep.failures[0].code == "bundle.manifest"
    # Even with the manifest rewritten to match, the witness in the bundle catches it.
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["files"][f"{runs.research.name}/checkpoint"]
    import hashlib

    digest = hashlib.sha256((inner / "ledger.jsonl").read_bytes()).hexdigest()
    manifest["files"][f"{runs.research.name}/ledger.jsonl"] = "sha256:" + digest
    (out / "manifest.json").write_text(json.dumps(manifest))
    rep = verify_run(out, runs.public_key)
    assert rep.verdict == "invalid" and rep.failures[0].code == "witness.rollback"


def test_bundle_archive_with_a_link_or_escaping_path_is_refused(
    runs: DemoRuns, tmp_path: Path
) -> None:
    out = tmp_path / "b.tar.gz"
    assert _cli("export", runs.research, "--out", out, "--key", runs.public_key)[0] == 0
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        info = tarfile.TarInfo("b/../../escape")
        tar.addfile(info)
        link = tarfile.TarInfo("b/ledger")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tar.addfile(link)
    rep = verify_run(evil, runs.public_key)
    assert rep.verdict == "invalid" and rep.failures[0].code == "bundle.manifest"
    assert not (tmp_path.parent / "escape").exists()


def test_export_refuses_invalid_evidence_and_an_existing_output(
    runs: DemoRuns, tmp_path: Path
) -> None:
    out = tmp_path / "b"
    out.mkdir()
    code, _, err = _cli("export", runs.research, "--out", out, "--key", runs.public_key)
    assert code == 2 and "already exists" in err
    ledger = runs.research / "ledger.jsonl"
    ledger.write_bytes(ledger.read_bytes().replace(b'"alice"', b'"mallo"', 1))
    code, _, err = _cli("export", runs.research, "--out", tmp_path / "c", "--key", runs.public_key)
    assert code == 1 and "not exported" in err and not (tmp_path / "c").exists()


# --- runs, --version ------------------------------------------------------------------------


def test_runs_lists_newest_first_with_verdicts(runs: DemoRuns, tmp_path: Path) -> None:
    broken = runs.evidence / "run_broken00000000"
    shutil.copytree(runs.research, broken)
    code, out, err = _cli("runs", runs.evidence, "--key", runs.public_key, "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert [r["start_us"] for r in rows] == sorted((r["start_us"] for r in rows), reverse=True)
    by_id = {r["run_id"]: r for r in rows}
    assert by_id[runs.research.name]["verdict"] == "verified"
    assert by_id[runs.research.name]["status"] == "ok"
    assert by_id[runs.revoked.name]["status"] == "violation"
    assert by_id[runs.research.name]["principal"] == "alice"
    assert by_id["run_broken00000000"]["failure"]["code"] == "run.binding"
    code, out, _ = _cli("runs", runs.evidence, "--key", runs.public_key)
    assert code == 0 and runs.research.name in out and "invalid (run.binding)" in out


def test_runs_of_a_missing_directory_is_a_usage_error(tmp_path: Path) -> None:
    code, _, err = _cli("runs", tmp_path / "nowhere")
    assert code == 2 and "no such evidence directory" in err


def test_version_prints_the_package_version() -> None:
    code, out, _ = _cli("--version")
    assert code == 0 and out == f"tenure {__version__}\n"


def test_runs_prints_no_escape_sequence_a_ledger_carries(tmp_path: Path) -> None:
    """The attack: a run.start whose principal is ``ESC[2K`` plus a forged row, so the
    listing an operator reads would show something else. The row is printed as one
    printable line (and the edited run is, rightly, invalid)."""
    b = build_run(tmp_path, 1, run_id="run_esc")
    ledger = b.run_dir / "ledger.jsonl"
    ledger.write_bytes(ledger.read_bytes().replace(b'"alice"', b'"\\u001b[2Kmallory\\n"', 1))
    code, out, err = _cli("runs", tmp_path)
    assert code == 0, err
    assert "\x1b" not in out and "\\x1b[2Kmallory" in out
    assert "invalid" in out
