"""Tamper evidence: hide a policy denial by editing the ledger, and watch verification fail.

1. A run in which an agent's `delete_records` call is denied by policy; its evidence
   verifies.
2. Attack 1: rewrite that `decision` record in place (`"effect": "deny"` -> `"allow"`).
   Each record carries the hash of the one before it, so the next record's link breaks:
   verification fails at record k+1 and names record k as the altered one.
3. Attack 2: the same edit, and every later record's `prev` recomputed so the hash chain is
   consistent again. The signed checkpoint (an Ed25519-signed Merkle root over the records)
   no longer matches: verification fails at the checkpoint covering record k. Forging it
   needs the runtime's private key, which never lies beside the evidence.

The evidence goes to a temporary folder (it is deliberately damaged), unless
`--evidence-dir` is given.

    .venv/bin/python examples/tamper_evidence.py
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import anyio

from tenure import Context, PolicyDenied, Runtime, agent, tool
from tenure.crypto import default_key_dir, load_public_key
from tenure.evidence import VerifyReport, record_bytes, verify_run
from tenure.policies import PolicySet

POLICY = """
version = 1
default = "deny"

[[rules]]
id = "cleanup-job"
effect = "allow"
targets = ["janitor", "list_records"]

[[rules]]
id = "no-deletes"
effect = "deny"
targets = ["delete_*"]
"""


@tool
async def list_records() -> list[str]:
    """The records a janitor might clean up (simulated)."""
    return ["invoice-17", "invoice-18"]


@tool
async def delete_records(names: list[str]) -> int:
    """Delete records (denied by the policy: never runs)."""
    raise RuntimeError("unreachable: the policy denies delete_*")


@agent
async def janitor(ctx: Context) -> str:
    """Tries to delete old records; the policy says no."""
    names = await ctx.call(list_records)
    try:
        await ctx.call(delete_records, names)
    except PolicyDenied as exc:
        return f"left {len(names)} records in place ({exc.check})"
    return "deleted"


def verify(run_dir: Path) -> VerifyReport:
    """Verify with the runtime's public key from the key directory."""
    return verify_run(run_dir, load_public_key(default_key_dir() / "tenure.pub"))


def show(title: str, report: VerifyReport) -> None:
    """One line per verification."""
    verdict = "verified" if report.ok else f"FAILED at {report.failure_line()}"
    print(f"{title}: {verdict}")


def leaf_hash(line: bytes) -> str:
    """RFC 9162 leaf hash of a ledger line (what the next record's `prev` holds)."""
    return hashlib.sha256(b"\x00" + line).hexdigest()


def edit_in_place(ledger: Path, index: int) -> None:
    """Attack 1: flip the denial to an allow, touching nothing else."""
    lines = ledger.read_bytes().splitlines()
    rec = json.loads(lines[index])
    rec["effect"] = "allow"
    lines[index] = record_bytes(rec)
    ledger.write_bytes(b"".join(line + b"\n" for line in lines))


def edit_and_rechain(ledger: Path, index: int) -> None:
    """Attack 2: flip the denial and recompute every later record's `prev`."""
    records = [json.loads(line) for line in ledger.read_bytes().splitlines()]
    records[index]["effect"] = "allow"
    out, prev = [], "0" * 64
    for rec in records:
        rec["prev"] = prev
        line = record_bytes(rec)
        out.append(line)
        prev = leaf_hash(line)
    ledger.write_bytes(b"".join(line + b"\n" for line in out))


async def main(evidence_dir: Path) -> int:
    """Run, verify, tamper twice, verify again; 0 when both attacks are caught."""
    policy = PolicySet.from_text(POLICY, source="tamper_evidence.py")
    async with Runtime(policies=policy, evidence_dir=evidence_dir) as rt:
        handle = await rt.start(janitor, principal="ops", ttl=30)
        print(f"run result: {await handle.result()}")
    run_dir = handle.evidence_path
    ledger = run_dir / "ledger.jsonl"
    original = ledger.read_bytes()
    records = [json.loads(line) for line in original.splitlines()]
    k = next(r["i"] for r in records if r["kind"] == "decision" and r["effect"] == "deny")
    print(f"evidence: {run_dir} ({len(records)} records; the denial is record {k})")
    clean = verify(run_dir)
    show("before tampering", clean)

    print(f"attack 1: edit record {k} (decision) in place: effect deny -> allow")
    edit_in_place(ledger, k)
    first = verify(run_dir)
    show("after attack 1", first)
    ledger.write_bytes(original)

    print(f"attack 2: the same edit, and records {k + 1}.. re-chained to hide it")
    edit_and_rechain(ledger, k)
    second = verify(run_dir)
    show("after attack 2", second)
    ledger.write_bytes(original)
    show("restored", verify(run_dir))

    caught_1 = (
        not first.ok and first.first_bad_index == k + 1 and f"record {k}" in (first.problem or "")
    )
    caught_2 = (
        not second.ok
        and second.first_bad_kind == "checkpoint"
        and second.first_bad_index is not None
        and second.first_bad_index > k
    )
    print(f"attack 1 caught at the record after the edit: {caught_1}")
    print(f"attack 2 caught at the signed checkpoint: {caught_2}")
    return 0 if clean.ok and caught_1 and caught_2 else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evidence-dir", type=Path, default=None)
    given = parser.parse_args().evidence_dir
    if given is not None:
        raise SystemExit(anyio.run(main, given))
    tmp = Path(tempfile.mkdtemp(prefix="tenure-tamper-"))
    try:
        code = anyio.run(main, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    raise SystemExit(code)
