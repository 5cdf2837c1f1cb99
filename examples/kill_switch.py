"""Kill switch: a run in this process is stopped by `tenure revoke` run from another process.

An operator (or an incident script) does not need a handle on the runtime: it runs
`tenure revoke RUN_ID --reason ... --evidence-dir DIR`, which drops a request into
`DIR/.revocations`. The runtime writing its evidence to DIR applies it on its next watchdog
pass, exactly like `rt.revoke`, and its ledger records who asked and why. This script plays
both parts: it starts a long-running agent team, then runs `python -m tenure revoke ...` as
a separate process and shows the run stopping.

    .venv/bin/python examples/kill_switch.py [--evidence-dir runs]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import anyio

from tenure import Context, LeaseRevoked, Runtime, agent, tool
from tenure.crypto import default_key_dir, load_public_key
from tenure.evidence import verify_run
from tenure.lineage import load_trace
from tenure.policies import PolicySet

POLICY = """
version = 1
default = "deny"

[[rules]]
id = "sync-team"
effect = "allow"
targets = ["sync_lead", "syncer", "copy_batch"]
"""

SYNCERS = 3
batches: dict[int, int] = {}
underway = anyio.Event()


@tool(scopes={"data:copy"})
async def copy_batch(shard: int, batch: int) -> int:
    """Copy one batch of records to the other region (simulated)."""
    await anyio.sleep(0.01)
    return 100


@agent(scopes={"data:copy"})
async def syncer(ctx: Context, shard: int) -> int:
    """Copy a shard batch by batch (far more batches than it will get to)."""
    copied = 0
    for batch in range(1, 100_000):
        copied += await ctx.call(copy_batch, shard, batch)
        batches[shard] = batch
        if len(batches) == SYNCERS and min(batches.values()) >= 3:
            underway.set()
    return copied


@agent(scopes={"data:copy"})
async def sync_lead(ctx: Context) -> None:
    """Run every syncer in parallel."""
    async with ctx.parallel() as p:
        for shard in range(SYNCERS):
            p.start(syncer, shard)


def revoked_with(run_dir: Path) -> int:
    """How many leases the run's revocation revoked with the one it names (trace view)."""
    nodes = [load_trace(run_dir).root]
    while nodes:
        node = nodes.pop()
        for event in node.events:
            if event["kind"] == "lease.revoked":
                return int(event["cascade"])
        nodes.extend(node.children)
    return 0


async def main(evidence_dir: Path) -> int:
    """Start the sync, revoke it from another process, show the stop and its evidence."""
    policy = PolicySet.from_text(POLICY, source="kill_switch.py")
    async with Runtime(policies=policy, evidence_dir=evidence_dir) as rt:
        handle = await rt.start(sync_lead, principal="etl", scopes={"data:copy"}, ttl=120)
        with anyio.fail_after(20):
            await underway.wait()
        print(f"{SYNCERS} syncers underway, batches copied: {dict(sorted(batches.items()))}")
        command = [sys.executable, "-m", "tenure", "revoke", handle.run_id]
        command += ["--reason", "incident 42: data leaving the region", "--by", "oncall"]
        command += ["--evidence-dir", str(evidence_dir), "--wait", "20"]
        print("$ tenure revoke", handle.run_id, "--reason 'incident 42: ...' --by oncall")
        done = await anyio.run_process(command, check=False)
        print(done.stdout.decode().strip())
        if done.returncode != 0:
            print(done.stderr.decode().strip())
            return 1
        try:
            with anyio.fail_after(20):
                await handle.result()
        except LeaseRevoked as exc:
            print(
                f"run stopped fail closed: LeaseRevoked ({exc.check}) by {exc.source}: {exc.reason}"
            )
        else:
            print("unexpected: the run finished")
            return 1
    lines = (handle.evidence_path / "ledger.jsonl").read_text().splitlines()
    revoked = next(r for r in map(json.loads, lines) if r["kind"] == "lease.revoked")
    print(
        f"ledger record {revoked['i']}: lease.revoked by {revoked['by']!r}, reason "
        f"{revoked['reason']!r}; {1 + revoked_with(handle.evidence_path)} lease(s) revoked: "
        "the root's and its children's"
    )
    report = verify_run(handle.evidence_path, load_public_key(default_key_dir() / "tenure.pub"))
    print(
        f"evidence {handle.evidence_path}: "
        + ("verified" if report.ok else f"INVALID {report.failure_line()}")
        + f" (run status {report.run_status})"
    )
    return 0 if report.ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evidence-dir", type=Path, default=Path("runs"))
    raise SystemExit(anyio.run(main, parser.parse_args().evidence_dir))
