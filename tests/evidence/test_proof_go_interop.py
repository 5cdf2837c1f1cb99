"""Tenure's checkpoints and proofs checked by Go's ``golang.org/x/mod/sumdb`` (note, tlog).

An independent implementation of C2SP signed notes and RFC 6962 proofs must accept every
inclusion proof of the demo's runs and every consistency proof of a run with many
checkpoints, and refuse a tampered one. Needs Debian's ``golang-go`` and
``golang-golang-x-mod-dev`` (``make test`` installs them); skipped with that reason otherwise.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path

import pytest

from tenure.evidence import verify_run
from tenure.evidence._ledger_io import LedgerConfig
from tenure.evidence._proof import prove_consistency, prove_inclusion
from tests.support.demo_runs import DemoRuns
from tests.support.run_builder import build_run, records

GO = shutil.which("go")
GOPATH = Path("/usr/share/gocode")
pytestmark = pytest.mark.skipif(
    GO is None or not (GOPATH / "src/golang.org/x/mod/sumdb/tlog").is_dir(),
    reason="Go interop needs Debian's golang-go and golang-golang-x-mod-dev "
    "(`make test` installs them as root)",
)


@pytest.fixture(scope="module")
def tlogcheck(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("go")
    shutil.copy(Path(__file__).parent / "interop" / "tlogcheck.go", work)
    env = {
        "GO111MODULE": "off",
        "GOPATH": str(GOPATH),
        "GOCACHE": str(work / "cache"),
        "HOME": str(work),
        "PATH": "/usr/bin:/bin",
    }
    assert GO is not None
    subprocess.run(
        [GO, "build", "-o", "tlogcheck", "tlogcheck.go"],
        cwd=work,
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    return work / "tlogcheck"


def _go(tool: Path, vkey: str, proofs: list[Path]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(tool), vkey, *map(str, proofs)], capture_output=True, text=True, timeout=120
    )


def test_go_accepts_every_inclusion_proof_of_the_demo_runs(
    tlogcheck: Path, demo_runs: DemoRuns, tmp_path: Path
) -> None:
    for run in (demo_runs.research, demo_runs.revoked):
        rep = verify_run(run, demo_runs.public_key)
        assert rep.ok and rep.verifier_key is not None
        proofs = []
        for n in range(rep.tree_size):
            p = tmp_path / f"{run.name}-{n}.tlog-proof"
            p.write_text(prove_inclusion(run, n))
            proofs.append(p)
        result = _go(tlogcheck, rep.verifier_key, proofs)
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.count("ok ") == rep.tree_size


def test_go_accepts_every_consistency_proof_and_refuses_a_tampered_one(
    tlogcheck: Path, tmp_path: Path
) -> None:
    b = build_run(tmp_path, 15, config=LedgerConfig(checkpoint_every=4, checkpoint_interval=0))
    rep = verify_run(b.run_dir, b.key.public_key)
    assert rep.ok and rep.verifier_key is not None
    sizes = [r["size"] for r in records(b.run_dir) if r["kind"] == "checkpoint"]
    proofs = []
    for old in sizes:
        p = tmp_path / f"c{old}.proof"
        p.write_text(prove_consistency(b.run_dir, old))
        proofs.append(p)
    result = _go(tlogcheck, rep.verifier_key, proofs)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("ok ") == len(sizes) >= 8
    # A flipped hash in a consistency proof and a changed record in an inclusion proof.
    lines = proofs[2].read_text().split("\n")
    lines[2] = base64.b64encode(bytes(32)).decode()
    proofs[2].write_text("\n".join(lines))
    assert _go(tlogcheck, rep.verifier_key, [proofs[2]]).returncode == 1
    inc = tmp_path / "inc.tlog-proof"
    text = prove_inclusion(b.run_dir, 3).split("\n")
    record = base64.b64decode(text[1][6:]).replace(b'"search"', b'"shell!"')
    text[1] = "extra " + base64.b64encode(record).decode()
    inc.write_text("\n".join(text))
    assert _go(tlogcheck, rep.verifier_key, [inc]).returncode == 1
