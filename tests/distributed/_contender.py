"""A contending process for the race tests: ``python -m tests.distributed._contender``.

``approve URL NAME COUNT DECISION``: decide requests ``apr_0 .. apr_{COUNT-1}``, printing
how many this process won. ``debit URL NAME RUN LIMIT``: take one step at a time from the
run's shared budget until refused, printing how many were granted. Both register as a
member, print ``ready`` and wait for a ``go`` line on stdin, so every contender starts at
the same moment.
"""

from __future__ import annotations

import json
import sys

import anyio

from tenure.runtime.backends import Debit
from tenure.runtime.backends._pg import PgBackend


async def main(argv: list[str]) -> None:
    mode, url, name = argv[0], argv[1], argv[2]
    backend = await PgBackend.connect(url, op_timeout=30)
    try:
        member = await backend.liveness.register(name, None, 120, {})
        print("ready", flush=True)
        await anyio.to_thread.run_sync(sys.stdin.readline)
        if mode == "approve":
            count, decision = int(argv[3]), argv[4]
            won = 0
            for i in range(count):
                decided = await backend.approvals.decide(
                    f"apr_{i}",
                    decision,  # type: ignore[arg-type]
                    approver=name,
                )
                won += decided is not None
            print(json.dumps({"won": won}), flush=True)
        elif mode == "debit":
            run_id, limit = argv[3], int(argv[4])
            granted = 0
            step = Debit(run_id, {"steps": 1}, {"steps": limit})
            while await backend.budgets.debit(member, step) is None:
                granted += 1
            print(json.dumps({"granted": granted}), flush=True)
        else:
            raise SystemExit(f"unknown mode {mode!r}")
    finally:
        await backend.close()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1:])
