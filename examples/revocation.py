"""Revocation: four agents crawl in parallel; an operator revokes the run mid-flight.

`rt.revoke(run_id, reason=...)` is synchronous: when it returns, no governed task of the
run resumes, sleeping tasks are woken and cancelled, and the stop is recorded in the
evidence. The script then reads the run's ledger and prints what stopped, when (relative
to the revocation) and why, and verifies that evidence.

    .venv/bin/python examples/revocation.py [--evidence-dir runs]
"""

from __future__ import annotations

import argparse
import json
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
id = "crawl-team"
effect = "allow"
targets = ["coordinator", "crawler", "fetch"]
"""

CRAWLERS = 4
fetched: dict[int, int] = {}
bodies_after_revoke = 0
revoked = False
underway = anyio.Event()


@tool(scopes={"web:read"})
async def fetch(site: int, page: int) -> str:
    """Fetch one page (simulated)."""
    global bodies_after_revoke
    if revoked:
        bodies_after_revoke += 1
    await anyio.sleep(0.01)
    return f"site{site}/page{page}"


@agent(scopes={"web:read"})
async def crawler(ctx: Context, site: int) -> int:
    """Crawl one site page by page (far more pages than it will get to)."""
    for page in range(1, 10_000):
        await ctx.call(fetch, site, page)
        fetched[site] = page
        if len(fetched) == CRAWLERS and min(fetched.values()) >= 3:
            underway.set()
    return len(fetched)


@agent(scopes={"web:read"})
async def coordinator(ctx: Context) -> None:
    """Start every crawler in parallel."""
    async with ctx.parallel() as p:
        for site in range(CRAWLERS):
            p.start(crawler, site)


def explain(run_dir: Path) -> None:
    """Print, from the ledger, what stopped, when and why."""
    records = [json.loads(line) for line in (run_dir / "ledger.jsonl").read_text().splitlines()]
    names = {r["step"]: r["target"] for r in records if r["kind"] == "step.start"}
    revoke = next(r for r in records if r["kind"] == "lease.revoked")
    # The record names the lease; the trace view counts the leases delegated under it.
    print(
        f"revoked at record {revoke['i']}: lease {revoke['lease']} and "
        f"{revoked_with(run_dir)} descendant lease(s); reason: {revoke['reason']}"
    )
    for r in records:
        if r["kind"] == "steps.stopped":  # every step the stop unwound, with its end time
            for step, ended in zip(r["steps"], r["ended"], strict=True):
                after_ms = (ended - revoke["t"]) / 1000
                print(
                    f"  stopped  {names[step]:<12} step {step:<3} "
                    f"{after_ms:6.2f} ms after the revocation  ({r['error']})"
                )
    violation = next(r for r in records if r["kind"] == "violation")
    print(
        f"why: {violation['error']} check={violation['check']} source={violation['source']}: "
        f"{violation['reason']}"
    )


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
    """Start the crawl, revoke it once every crawler is underway, explain the stop."""
    global revoked
    policy = PolicySet.from_text(POLICY, source="revocation.py")
    async with Runtime(policies=policy, evidence_dir=evidence_dir) as rt:
        handle = await rt.start(coordinator, principal="ops", scopes={"web:read"}, ttl=60)
        with anyio.fail_after(10):
            await underway.wait()
        print(f"{CRAWLERS} crawlers underway, pages fetched: {dict(sorted(fetched.items()))}")
        rt.revoke(handle.run_id, reason="operator: crawl exceeded its mandate")
        revoked = True
        print("rt.revoke(...) returned")
        try:
            await handle.result()
        except LeaseRevoked as exc:
            print(f"run stopped fail closed: LeaseRevoked ({exc.check}): {exc.reason}")
        else:
            print("unexpected: the run finished")
            return 1
    explain(handle.evidence_path)
    print(f"tool bodies started after revoke returned: {bodies_after_revoke}")
    report = verify_run(handle.evidence_path, load_public_key(default_key_dir() / "tenure.pub"))
    print(
        f"evidence {handle.evidence_path}: "
        + ("verified" if report.ok else f"INVALID {report.failure_line()}")
        + f" (run status {report.run_status})"
    )
    return 0 if report.ok and bodies_after_revoke == 0 else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evidence-dir", type=Path, default=Path("runs"))
    raise SystemExit(anyio.run(main, parser.parse_args().evidence_dir))
