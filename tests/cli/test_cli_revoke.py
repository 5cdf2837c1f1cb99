"""``tenure revoke`` through the folder: it refuses an id found nowhere and creates nothing,
never lets a ledger's word withhold the request, and says whether a runtime applied it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from typer.testing import CliRunner

from tenure import Context, LeaseRevoked, Runtime, agent
from tenure.cli import app
from tenure.policies import PolicySet
from tests.support.run_builder import build_run


def _revoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["revoke", *args, "--reason", "r", "--wait", "0.2"])
    return result.exit_code, result.stdout, result.stderr


def test_revoking_in_an_evidence_dir_that_does_not_exist_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    code, _, err = _revoke("run_a", "--evidence-dir", str(missing))
    assert code == 2 and "no such evidence directory" in err and err.count("\n") == 1
    assert not missing.exists()


def test_revoking_an_unknown_run_says_so_and_writes_no_request(tmp_path: Path) -> None:
    build_run(tmp_path, 1, run_id="run_other")
    code, _, err = _revoke("run_unknown", "--evidence-dir", str(tmp_path))
    assert code == 1 and "no live run or lease 'run_unknown'" in err
    assert not (tmp_path / ".revocations").exists()


def test_revoking_a_run_whose_ledger_says_it_ended_still_sends_and_says_so(
    tmp_path: Path,
) -> None:
    """The ledger's word is unverified: the request goes out, with a warning, and no
    runtime applying it is reported with what the ledger said."""
    b = build_run(tmp_path, 1, run_id="run_done")
    code, out, err = _revoke(b.run_id, "--evidence-dir", str(tmp_path))
    assert code == 1 and "revocation requested" in out
    assert "warning: run run_done already ended (ok) by its ledger's unverified word" in err
    assert "no runtime applied it within 0.2s (run run_done already ended" in err
    assert len(list((tmp_path / ".revocations").iterdir())) == 1


async def _revoked_by_the_cli(
    policy: PolicySet, evidence: Path, tamper: Callable[[Path], None] | None = None
) -> LeaseRevoked:
    """Start a waiting run, let ``tamper`` touch its run folder, revoke it with the CLI:
    the CLI reports the runtime applied it, and the run stops with what is returned."""
    started = anyio.Event()

    @agent
    async def waiter(ctx: Context) -> None:
        started.set()
        await anyio.sleep(30)

    async with Runtime(policies=policy, evidence_dir=evidence) as rt:
        handle = await rt.start(waiter, principal="alice", scopes=set(), ttl=30)
        await started.wait()
        if tamper is not None:
            tamper(handle.evidence_path)
        result = await anyio.to_thread.run_sync(
            lambda: CliRunner().invoke(
                app,
                ["revoke", handle.run_id, "--reason", "ops", "--evidence-dir", str(evidence)],
            )
        )
        assert result.exit_code == 0, result.stderr
        assert f"applied: the runtime holding {handle.run_id} revoked it" in result.stdout
        with pytest.raises(LeaseRevoked) as info:
            await handle.result()
    return info.value


async def test_revoking_a_live_run_reports_that_its_runtime_applied_it(
    allow_all: PolicySet, evidence: Path
) -> None:
    stop = await _revoked_by_the_cli(allow_all, evidence)
    assert stop.source.startswith("request:")


def test_a_request_no_runtime_applies_is_reported_not_silently_accepted(tmp_path: Path) -> None:
    b = build_run(tmp_path, 1, run_id="run_live")
    ledger = b.run_dir / "ledger.jsonl"  # a crashed run: its records up to run.end, no end
    lines = ledger.read_bytes().splitlines(keepends=True)
    end = next(n for n, line in enumerate(lines) if b'"kind":"run.end"' in line)
    ledger.write_bytes(b"".join(lines[:end]))
    code, out, err = _revoke("run_live", "--evidence-dir", str(tmp_path))
    assert code == 1 and "revocation requested" in out
    assert "no runtime applied it within 0.2s" in err


@pytest.mark.parametrize(
    "planted",
    [
        b'{"kind":"run.end","status":"ok","error":"","check":"","reason":"","result":""}\n',
        b"garbled\n{}\n",
    ],
    ids=["forged run.end", "garbled lines"],
)
async def test_an_agent_writing_to_its_own_ledger_cannot_disable_the_kill_switch(
    allow_all: PolicySet, evidence: Path, planted: bytes
) -> None:
    """The attack: the governed code appends a forged ``run.end`` (or lines that do not
    parse) to its own ledger, so that ``tenure revoke`` would read it as ended (or
    unreadable) and refuse to send. The request is sent anyway and the runtime applies it."""

    def plant(run_dir: Path) -> None:
        with (run_dir / "ledger.jsonl").open("ab") as ledger:
            ledger.write(planted)

    stop = await _revoked_by_the_cli(allow_all, evidence, plant)
    assert stop.source.startswith("request:")


def test_an_id_that_may_be_in_an_unreadable_ledger_is_sent_with_a_warning(
    tmp_path: Path,
) -> None:
    b = build_run(tmp_path, 1, run_id="run_garbled")
    ledger = b.run_dir / "ledger.jsonl"
    ledger.write_bytes(b"garbled\n" + ledger.read_bytes())
    code, out, err = _revoke("lease_x", "--evidence-dir", str(tmp_path))
    assert "the ledger(s) of run_garbled could not be read" in err
    assert code == 1 and "revocation requested" in out
