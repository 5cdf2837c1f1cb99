"""Evidence ledger throughput: append (checkpoints every 1,000, fsync per checkpoint) and verify.

Run: ``python -m benchmarks.bench_ledger [N_APPEND] [N_VERIFY]``. ``main()`` returns the
named figures. Records are realistic governed-step records (decision, step.start,
step.end, ~250-450 bytes each) with a signed lease issued every 100 steps; the verify run
checks every record, chain, Merkle root, checkpoint note and lease signature.
Targets (issue 4): append >= 50,000 records/s, verify >= 200,000 records/s.
"""

from __future__ import annotations

import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tenure.crypto import SigningKey, b64e, canonical, digest, sign_envelope
from tenure.evidence import LEASE_PAYLOAD_TYPE, verify_run
from tenure.evidence._ledger import Ledger
from tenure.evidence._ledger_io import LedgerConfig

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"


def _write_run(evidence: Path, n_records: int, key: SigningKey, cfg: LedgerConfig) -> float:
    """Write a run of about ``n_records`` records; return the seconds spent appending."""
    run_id = "bench-run"
    led = Ledger.create(evidence / run_id, run_id, key, cfg, evidence / ".witness")
    deadline = time.time_ns() // 1000 + 3600 * 10**6
    args = digest(b"args")
    result = digest(b"result")
    t0 = time.perf_counter()
    led.append(
        "run.start",
        {
            "run": run_id,
            "principal": "bench",
            "scopes": ["web:read"],
            "ttl_ms": 3_600_000,
            "deadline": deadline,
            "agent": "root",
            "args": args,
            "policy": args,
            "attestation": "",
            "key": key.key_id,
            "pubkey": b64e(key.public_raw),
            "runtime": "0.1.0",
            "config": {},
        },
    )
    lease = ""
    k = 0
    while led.size < n_records:
        if k % 100 == 0:
            lease = f"lease-{k:08d}"
            claims = {
                "lid": lease,
                "run": run_id,
                "exp": deadline,
                "scopes": ["web:read"],
                "parent": None,
            }
            env = sign_envelope(key, LEASE_PAYLOAD_TYPE, canonical(claims))
            led.append(
                "lease.issued",
                {
                    "lease": lease,
                    "parent": "",
                    "subject": "agent:root",
                    "scopes": ["web:read"],
                    "exp": deadline,
                    "envelope": env,
                },
                trace=TRACE,
                span=SPAN,
            )
        step = f"step-{k:08d}"
        d = led.append(
            "decision",
            {
                "step": step,
                "lease": lease,
                "action": "execute_tool",
                "target": "search",
                "caller": "root",
                "effect": "allow",
                "rule": "allow-search",
                "reason": "",
                "args": args,
            },
            trace=TRACE,
            span=SPAN,
        )
        led.append(
            "step.start",
            {
                "step": step,
                "lease": lease,
                "action": "execute_tool",
                "target": "search",
                "decision": d,
                "approval": -1,
                "parent": "",
                "depth": 1,
                "args": args,
            },
            trace=TRACE,
            span=SPAN,
        )
        led.append(
            "step.end",
            {"step": step, "status": "ok", "result": result, "error": "", "message": ""},
            trace=TRACE,
            span=SPAN,
            flush=False,
        )
        k += 1
    led.append(
        "run.end", {"status": "ok", "error": "", "check": "", "reason": "", "result": result}
    )
    led.close()
    return time.perf_counter() - t0


def main(n_append: int = 200_000, n_verify: int = 200_000) -> dict[str, Any]:
    """Measure and print; return the figures."""
    key = SigningKey.generate()
    cfg = LedgerConfig(checkpoint_every=1000, checkpoint_interval=1.0, fsync="checkpoint")
    base = Path(tempfile.mkdtemp(prefix="tenure-bench-ledger-", dir=os.getcwd()))
    try:
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        secs = _write_run(base / "a", n_append, key, cfg)
        run_dir = base / "a" / "bench-run"
        n_written = sum(1 for _ in (run_dir / "ledger.jsonl").open("rb"))
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        append_rate = n_written / secs
        if n_verify != n_append:
            _write_run(base / "v", n_verify, key, cfg)
            run_dir = base / "v" / "bench-run"
        n_v = sum(1 for _ in (run_dir / "ledger.jsonl").open("rb"))
        size = (run_dir / "ledger.jsonl").stat().st_size
        t0, c0 = time.perf_counter(), time.process_time()
        rep = verify_run(run_dir, key.public_key)
        vsecs, vcpu = time.perf_counter() - t0, time.process_time() - c0
        assert rep.ok, rep.failure_line()
        figures = {
            "append_records": n_written,
            "append_records_per_s": round(append_rate),
            "append_us_per_record": round(secs / n_written * 1e6, 2),
            "append_max_rss_growth_kb": rss1 - rss0,
            "verify_records": n_v,
            "verify_bytes_per_record": round(size / n_v),
            "verify_records_per_s": round(n_v / vsecs),
            "verify_records_per_cpu_s": round(n_v / vcpu),
            "verify_checkpoints": rep.checkpoints,
        }
    finally:
        shutil.rmtree(base, ignore_errors=True)
    for name, value in figures.items():
        print(f"{name:>28}: {value:,}")
    return figures


if __name__ == "__main__":
    argv = [int(a) for a in sys.argv[1:]]
    main(*argv)
