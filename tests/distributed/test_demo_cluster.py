"""``make demo-cluster`` as a newcomer runs it: its own PostgreSQL, two workers, verified."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .conftest import ROOT


def test_the_cluster_demo_runs_revokes_exports_and_verifies_then_cleans_up(
    pg_template: Path,
) -> None:
    """``pg_template`` only makes the test skip (or fail under make test) like the other
    PostgreSQL tests when the server cannot be had; the demo starts its own."""
    env = {
        **os.environ,
        "PY": sys.executable,
        "TENURE": str(Path(sys.executable).with_name("tenure")),
    }
    done = subprocess.run(
        ["bash", "examples/distributed/demo.sh"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "worker w1 serving pool research" in out and "worker w2 serving pool research" in out
    assert "fail closed: a broken condition stops the whole run" in out
    assert "stopped: LeaseRevoked (lease.revoked)" in out
    assert out.count("verified (") == 2 and "cluster demo: everything verified" in out
    where = out.split("(in ", 1)[1].split(")", 1)[0]
    assert where.startswith(("/tmp/", os.environ.get("TMPDIR", "/tmp")))
    assert not Path(where).exists()  # everything it made is gone
