"""The demo's two real runs (a denial, an approval, a revocation), made once per session.

Tests that need real evidence (the report in a browser, fuzzing the readers, proofs) copy
these runs instead of building their own; nothing here is a test.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from typer.testing import CliRunner

from tenure.cli import app
from tenure.evidence import verify_run


@dataclass(frozen=True)
class DemoRuns:
    """Where the demo wrote: the evidence directory, its two runs and the public key."""

    evidence: Path
    research: Path  # ended ok: one denial, one approval
    revoked: Path  # revoked mid-flight, stopped fail closed
    public_key: Path

    def copy_to(self, dest: Path) -> DemoRuns:
        """A private copy (runs and witness) that a test may tamper with."""
        shutil.copytree(self.evidence, dest / "runs")
        shutil.copy(self.public_key, dest / "tenure.pub")
        return DemoRuns(
            dest / "runs",
            dest / "runs" / self.research.name,
            dest / "runs" / self.revoked.name,
            dest / "tenure.pub",
        )


def make_demo_runs(root: Path) -> DemoRuns:
    """Run ``tenure demo`` into ``root`` with its own key directory."""
    keys = root / "keys"
    evidence = root / "runs"
    result = CliRunner().invoke(
        app, ["demo", "--evidence-dir", str(evidence)], env={"TENURE_KEY_DIR": str(keys)}
    )
    assert result.exit_code == 0, result.output
    by_status = {verify_run(d, keys / "tenure.pub").run_status: d for d in evidence.glob("run_*")}
    return DemoRuns(evidence, by_status["ok"], by_status["violation"], keys / "tenure.pub")
