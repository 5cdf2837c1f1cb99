"""``tenure report`` at scale: a 100,000-call run rendered to HTML, time and file size.

Run: ``python -m benchmarks.bench_report [N_CALLS]``. ``main()`` returns the named figures.
The run is written through the real :class:`Ledger` with the same realistic governed-step
records as ``bench_ledger`` (decision, step.start, step.end per call; a signed lease every
100 calls). The report is rendered from scratch, verification included, as ``tenure
report`` does. Target (issue 16): a 100,000-call run renders in seconds and the file stays
small.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.bench_ledger import _write_run
from tenure.crypto import SigningKey
from tenure.evidence import verify_run
from tenure.evidence._ledger_io import LedgerConfig
from tenure.lineage._report import render_report


def main(n_calls: int = 100_000) -> dict[str, Any]:
    """Measure and print; return the figures."""
    key = SigningKey.generate()
    cfg = LedgerConfig(checkpoint_every=1000, checkpoint_interval=1.0, fsync="checkpoint")
    base = Path(tempfile.mkdtemp(prefix="tenure-bench-report-", dir=os.getcwd()))
    try:
        # ~3 records per call, plus a lease every 100 calls
        _write_run(base, int(n_calls * 3.01), key, cfg)
        run_dir = base / "bench-run"
        records = sum(1 for _ in (run_dir / "ledger.jsonl").open("rb"))
        t0 = time.perf_counter()
        rep = verify_run(run_dir, key.public_key)
        t1 = time.perf_counter()
        html = render_report(run_dir, rep)
        t2 = time.perf_counter()
        assert rep.ok, rep.failure_line()
        figures = {
            "report_calls": n_calls,
            "report_records": records,
            "report_verify_s": round(t1 - t0, 2),
            "report_render_s": round(t2 - t1, 2),
            "report_total_s": round(t2 - t0, 2),
            "report_html_kb": round(len(html.encode()) / 1024, 1),
        }
    finally:
        shutil.rmtree(base, ignore_errors=True)
    for name, value in figures.items():
        print(f"{name:>20}: {value}")
    return figures


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:2]))
