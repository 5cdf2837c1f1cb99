"""A runtime in a process of its own: ``python -m tests.distributed._host URL DIR POLICY [MARKER]``.

Starts ``Runtime(backend=URL, evidence_dir=DIR, policies=POLICY)``, starts one run of an
agent that waits forever (with MARKER: one that delegates a lingering part marking MARKER
to the pool ``research``), prints ``run <id>`` and then, when the run ends, one JSON line:
its error class and check (``{"error": null}`` if it returned).
"""

from __future__ import annotations

import json
import sys

import anyio

from tenure import Context, GovernanceViolation, Runtime, agent

from .pool_agents import delegates_lingerer


@agent
async def waiter(ctx: Context) -> str:
    await anyio.sleep_forever()
    return "never"


async def main(url: str, evidence: str, policy: str, marker: str | None) -> None:
    async with Runtime(backend=url, evidence_dir=evidence, policies=policy) as rt:
        if marker is None:
            handle = await rt.start(waiter, principal="alice", ttl=120)
        else:
            handle = await rt.start(delegates_lingerer, marker, principal="alice", ttl=120)
        print("run", handle.run_id, flush=True)
        try:
            await handle.result()
        except GovernanceViolation as exc:
            print(json.dumps({"error": type(exc).__name__, "check": exc.check}), flush=True)
            return
        print(json.dumps({"error": None}), flush=True)


if __name__ == "__main__":
    anyio.run(
        main, sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else None
    )
