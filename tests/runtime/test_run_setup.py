"""``rt.start`` never does all of a run's setup in one loop turn: it opens the evidence
(``run.start``, the attestation) and returns; the root lease is signed and the root agent
starts in the run's own task, in a later turn."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import anyio.lowlevel

from tenure import Context, Runtime, SigningKey, agent
from tenure.policies import PolicySet

ALLOW = 'version = 1\ndefault = "deny"\n[[rules]]\nid = "all"\neffect = "allow"\n'
_ran: list[str] = []


@agent
async def noted(ctx: Context) -> str:
    _ran.append("body")
    return "done"


def _kinds(run_dir: Path) -> list[str]:
    lines = (run_dir / "ledger.jsonl").read_bytes().splitlines()
    return [json.loads(line)["kind"] for line in lines]


async def test_start_returns_before_the_root_lease_is_signed_or_the_agent_runs(
    tmp_path: Path,
) -> None:
    _ran.clear()
    rt = Runtime(
        policies=PolicySet.from_text(ALLOW), evidence_dir=tmp_path, key=SigningKey.generate()
    )
    async with rt:
        handle = await rt.start(noted, principal="alice")
        assert _kinds(handle.evidence_path) == ["run.start", "attestation"]  # nothing more yet
        assert _ran == [] and not handle.done
        await anyio.lowlevel.checkpoint()  # the run's task goes on in its own turns
        assert await handle.result() == "done"
    kinds = _kinds(handle.evidence_path)
    assert kinds[:3] == ["run.start", "attestation", "lease.batch"] and _ran == ["body"]
