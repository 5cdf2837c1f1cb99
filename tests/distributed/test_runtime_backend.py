"""A Runtime on a shared PostgreSQL backend: the schema gate, a stop that reaches every
process, policy epochs, and authority that ends on the local clock."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import anyio
import asyncpg
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from tenure import (
    Context,
    GovernanceUnavailable,
    LeaseRevoked,
    PolicyDenied,
    Runtime,
    RuntimeConfig,
    agent,
    tool,
)
from tenure.crypto import args_encoding, generate_key_files
from tenure.evidence import verify_run
from tenure.runtime.backends._pg import PgBackend, upgrade
from tenure.runtime.backends._pg_schema import SCHEMA_VERSION

from ._pg import PgServer
from .conftest import export_and_verify

ROOT = Path(__file__).resolve().parents[2]
ALLOW = """
version = 1
default = "deny"

[[rules]]
id = "allow-everything"
effect = "allow"
"""
NO_TOOLS = """
version = 1
default = "deny"

[[rules]]
id = "agents-only"
effect = "allow"
actions = ["invoke_agent"]
"""
FAST = RuntimeConfig(liveness_ttl=1.5, liveness_margin=0.3, liveness_interval=0.25)


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "allow.toml"
    path.write_text(ALLOW)
    return path


def tenure_cli(*argv: str) -> subprocess.CompletedProcess[str]:
    """The real command line, in a process of its own."""
    return subprocess.run(
        [sys.executable, "-m", "tenure", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )


def _empty(folder: Path) -> bool:
    return not folder.exists() or not any(folder.iterdir())


@tool
async def tick() -> int:
    return 1


@agent
async def ticking(ctx: Context, started: anyio.Event | None = None) -> str:
    if started is not None:
        started.set()
    while True:
        await ctx.call(tick)
        await anyio.sleep(0.02)


async def test_a_runtime_refuses_to_start_on_a_database_without_the_schema(
    pg_url: str, evidence: Path, policy: Path
) -> None:
    with pytest.raises(GovernanceUnavailable) as caught:
        async with Runtime(backend=pg_url, evidence_dir=evidence, policies=policy):
            pass
    assert caught.value.check == "backend.schema"
    assert "run `tenure db upgrade --backend URL` first" in caught.value.reason
    assert _empty(evidence)


async def test_a_runtime_refuses_a_schema_newer_than_it_knows(
    pg_url: str, evidence: Path, policy: Path
) -> None:
    await upgrade(pg_url)
    conn = await asyncpg.connect(pg_url)
    await conn.execute("INSERT INTO tenure_schema (version) VALUES (99)")
    await conn.close()
    with pytest.raises(GovernanceUnavailable) as caught:
        async with Runtime(backend=pg_url, evidence_dir=evidence, policies=policy):
            pass
    assert caught.value.check == "backend.schema"
    assert (
        f"version 99, newer than this Tenure knows (up to {SCHEMA_VERSION})" in caught.value.reason
    )


async def test_tenure_db_upgrade_creates_the_schema_once(pg_url: str) -> None:
    first = await anyio.to_thread.run_sync(tenure_cli, "db", "upgrade", "--backend", pg_url)
    assert first.returncode == 0, first.stderr
    applied = ", ".join(str(v) for v in range(1, SCHEMA_VERSION + 1))
    assert f"applied schema migration(s) {applied}" in first.stdout
    again = await anyio.to_thread.run_sync(tenure_cli, "db", "upgrade", "--backend", pg_url)
    assert again.returncode == 0 and "schema already current" in again.stdout
    unreachable = await anyio.to_thread.run_sync(
        tenure_cli, "db", "upgrade", "--backend", "postgresql://nobody:secret@127.0.0.1:1/x"
    )
    assert unreachable.returncode == 1
    assert "unreachable" in unreachable.stderr and "secret" not in unreachable.stderr


async def test_tenure_revoke_from_another_process_stops_the_run_through_the_log(
    pg_url: str, evidence: Path, policy: Path
) -> None:
    await upgrade(pg_url)
    async with Runtime(backend=pg_url, evidence_dir=evidence, policies=policy) as rt:
        started = anyio.Event()
        handle = await rt.start(ticking, started, principal="alice", ttl=60)
        await started.wait()
        done = await anyio.to_thread.run_sync(
            tenure_cli,
            "revoke",
            handle.run_id,
            "--reason",
            "incident 7",
            "--by",
            "oncall",
            "--backend",
            pg_url,
        )
        assert done.returncode == 0, done.stderr
        with anyio.fail_after(10), pytest.raises(LeaseRevoked) as caught:
            await handle.result()
    assert caught.value.source == "log:oncall"
    ledger = (handle.evidence_path / "ledger.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in ledger]
    revoked = [r for r in records if r["kind"] == "lease.revoked"]
    assert len(revoked) == 1 and revoked[0]["reason"] == "incident 7"
    verify = await anyio.to_thread.run_sync(
        tenure_cli,
        "verify",
        str(handle.evidence_path),
        "--key",
        str(handle.evidence_path / "tenure.pub"),
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr


async def test_rt_revoke_stops_a_run_held_by_a_runtime_in_another_process(
    pg_url: str, tmp_path: Path, policy: Path
) -> None:
    await upgrade(pg_url)
    far = tmp_path / "far"
    argv = [sys.executable, "-m", "tests.distributed._host", pg_url, str(far), str(policy)]
    async with await anyio.open_process(argv, cwd=ROOT) as host:
        assert host.stdout is not None
        lines = BufferedByteReceiveStream(host.stdout)
        with anyio.fail_after(30):
            run_id = (await lines.receive_until(b"\n", 1000)).decode().split()[1]
        async with Runtime(backend=pg_url, evidence_dir=tmp_path / "near", policies=policy) as rt:
            rt.revoke(run_id, reason="stop it everywhere")  # not held here: no KeyError
            with anyio.fail_after(30):
                outcome = json.loads(await lines.receive_until(b"\n", 1000))
        assert outcome == {"error": "LeaseRevoked", "check": "lease.revoked"}
        with anyio.fail_after(30):
            assert await host.wait() == 0
    report = verify_run(far / run_id)
    assert report.verdict == "verified" and report.run_status == "violation"


async def test_a_policy_epoch_reaches_another_runtime_and_stops_what_it_denies(
    pg_url: str, tmp_path: Path, policy: Path
) -> None:
    await upgrade(pg_url)
    strict = tmp_path / "strict.toml"
    strict.write_text(NO_TOOLS)
    async with (
        Runtime(backend=pg_url, evidence_dir=tmp_path / "a", policies=policy) as ra,
        Runtime(backend=pg_url, evidence_dir=tmp_path / "b", policies=policy) as rb,
    ):
        started = anyio.Event()
        handle = await rb.start(ticking, started, principal="alice", ttl=60)
        await started.wait()
        ra.reload_policies(strict)
        with anyio.fail_after(10), pytest.raises(PolicyDenied) as caught:
            await handle.result()
        assert rb.policy_digest() == ra.policy_digest()
    # The live tool step re-decided (source policy-reload) or the next one refused (policy):
    # either way by the other runtime's set, which allows no tool.
    assert caught.value.source in {"policy", "policy-reload"}
    assert "no rule matched principal 'alice', execute_tool 'tick'" in caught.value.reason


async def test_a_frozen_database_stops_every_run_on_its_own_clock(
    pg_private: PgServer, tmp_path: Path, policy: Path
) -> None:
    """Failure table: the database frozen (SIGSTOP of every server process). No error ever
    comes back; each run stops with ``backend.liveness`` within the lease, and after the
    thaw the runtime rejoins and runs again."""
    await upgrade(pg_private.dsn)
    async with Runtime(
        backend=pg_private.dsn, evidence_dir=tmp_path / "runs", policies=policy, config=FAST
    ) as rt:
        started = anyio.Event()
        handle = await rt.start(ticking, started, principal="alice", ttl=60)
        await started.wait()
        frozen = pg_private.freeze()
        t0 = anyio.current_time()
        try:
            with anyio.fail_after(10):
                await handle._run.done.wait()  # stopped and its evidence closed
            stopped_after = anyio.current_time() - t0
            with anyio.fail_after(10), pytest.raises(GovernanceUnavailable) as caught:
                await handle.result()  # waits (bounded) for the frozen backend's segment too
        finally:
            pg_private.thaw(frozen)
        assert caught.value.check == "backend.liveness"
        assert stopped_after <= FAST.liveness_ttl
        plane = rt._link.plane  # type: ignore[union-attr]
        with anyio.fail_after(20):
            while True:  # rejoining runs on the control plane's own timer
                if plane.live():
                    break
                await anyio.sleep(0.1)
        assert await rt.run(ticking_once, principal="alice", ttl=10) == 1
    report = verify_run(handle.evidence_path)
    assert report.verdict == "verified" and report.run_status == "violation"
    # The stop was recorded here, on this process's clock, while the database was frozen;
    # by the thaw this process had been declared lost, so its segment keeps exactly the
    # prefix that was durable: the export verifies as cut short, never as tampered.
    verify = await export_and_verify(pg_private.dsn, handle.run_id, tmp_path / "export")
    assert verify.returncode == 3, verify.stdout + verify.stderr
    assert f"run {handle.run_id}: incomplete (1 segments)" in verify.stdout
    exported = (tmp_path / "export" / handle.run_id / "ledger.jsonl").read_bytes()
    local = (handle.evidence_path / "ledger.jsonl").read_bytes()
    assert local.startswith(exported) and len(local) > len(exported)


@agent
async def ticking_once(ctx: Context) -> int:
    ticked: int = await ctx.call(tick)
    return ticked


@agent
async def ends_when_told(ctx: Context, started: anyio.Event, go: anyio.Event) -> str:
    started.set()
    await go.wait()
    return "done"


async def test_a_run_that_ends_while_the_database_is_down_returns_once_its_segment_is_whole(
    pg_private: PgServer, tmp_path: Path, policy: Path
) -> None:
    """The run ends while the database is down, so the first attempts to ship its last
    records (``run.end``, the final checkpoint) fail. ``result()`` promises the segment
    holds the whole run when it returns: it waits for the retry that lands once the
    database is back, and an export right after is the run's own ledger, byte for byte."""
    await upgrade(pg_private.dsn)
    async with Runtime(
        backend=pg_private.dsn, evidence_dir=tmp_path / "runs", policies=policy
    ) as rt:
        started, go = anyio.Event(), anyio.Event()
        handle = await rt.start(ends_when_told, started, go, principal="alice", ttl=60)
        await started.wait()
        pg_private.kill()
        go.set()
        async with anyio.create_task_group() as tg:

            async def restart() -> None:
                await anyio.to_thread.run_sync(lambda: pg_private.start())

            tg.start_soon(restart)
            with anyio.fail_after(30):
                assert await handle.result() == "done"
            local = (handle.evidence_path / "ledger.jsonl").read_bytes()
            # Read first thing: a result() that did not wait finds the database still
            # down, or the segment without its last records.
            backend = rt._link.backend  # type: ignore[union-attr]
            assert isinstance(backend, PgBackend)
            [segment] = await backend.evidence.segments(handle.run_id)
            lines, _ = await backend.evidence.records(segment.id)
            assert b"".join(lines) == local
        verify = await export_and_verify(pg_private.dsn, handle.run_id, tmp_path / "export")
        assert verify.returncode == 0, verify.stdout + verify.stderr
        assert (tmp_path / "export" / handle.run_id / "ledger.jsonl").read_bytes() == local


async def test_a_killed_and_restarted_database_loses_no_revocation_and_applies_each_once(
    pg_private: PgServer, tmp_path: Path, policy: Path
) -> None:
    """Failure table: the database killed and restarted under live runs. A revocation
    committed before the crash and one after both stop their run, each recorded once."""
    await upgrade(pg_private.dsn)
    async with Runtime(
        backend=pg_private.dsn, evidence_dir=tmp_path / "runs", policies=policy
    ) as rt:
        started = [anyio.Event(), anyio.Event()]
        a = await rt.start(ticking, started[0], principal="alice", ttl=60)
        b = await rt.start(ticking, started[1], principal="alice", ttl=60)
        for event in started:
            await event.wait()
        before = await anyio.to_thread.run_sync(
            tenure_cli, "revoke", a.run_id, "--reason", "before", "--backend", pg_private.dsn
        )
        assert before.returncode == 0, before.stderr
        with anyio.fail_after(10), pytest.raises(LeaseRevoked):
            await a.result()
        pg_private.kill()
        pg_private.start()
        after = await anyio.to_thread.run_sync(
            tenure_cli, "revoke", b.run_id, "--reason", "after", "--backend", pg_private.dsn
        )
        assert after.returncode == 0, after.stderr
        with anyio.fail_after(10), pytest.raises(LeaseRevoked):
            await b.result()
        plane = rt._link.plane  # type: ignore[union-attr]
        assert plane.applied == 2
    for handle, reason in ((a, "before"), (b, "after")):
        lines = (handle.evidence_path / "ledger.jsonl").read_text().splitlines()
        revoked = [r for r in map(json.loads, lines) if r["kind"] == "lease.revoked"]
        assert [r["reason"] for r in revoked] == [reason]
        report = verify_run(handle.evidence_path)
        assert report.verdict == "verified" and report.run_status == "violation"
        # Every acknowledged record survived the crash: the segment is the whole run.
        out = tmp_path / f"export-{reason}"
        verify = await export_and_verify(pg_private.dsn, handle.run_id, out)
        assert verify.returncode == 0, verify.stdout + verify.stderr
        assert (out / handle.run_id / "ledger.jsonl").read_text().splitlines() == lines


APPROVAL = """
version = 1
default = "deny"

[[rules]]
id = "agents"
effect = "allow"
actions = ["invoke_agent"]

[[rules]]
id = "pay-needs-approval"
effect = "require_approval"
actions = ["execute_tool"]
targets = ["pay"]
"""


@tool
async def pay(amount: int) -> str:
    return f"paid {amount}"


@agent
async def payer(ctx: Context, amount: int) -> str:
    paid: str = await ctx.call(pay, amount)
    return paid


async def test_two_approvers_on_other_hosts_race_and_exactly_one_decision_lands(
    pg_url: str, tmp_path: Path
) -> None:
    await upgrade(pg_url)
    keys = {who: generate_key_files(tmp_path / who) for who in ("bob", "eve")}
    policy = tmp_path / "approval.toml"
    declared = "".join(f'{who} = "{key.public_text}"\n' for who, key in keys.items())
    policy.write_text(APPROVAL + "\n[approvers]\n" + declared)
    async with Runtime(backend=pg_url, evidence_dir=tmp_path / "runs", policies=policy) as rt:
        handle = await rt.start(payer, 120, principal="alice", ttl=60)
        with anyio.fail_after(10):
            while True:  # filed by the run's own task
                if rt.pending_approvals():
                    break
                await anyio.sleep(0.02)
        listed = await anyio.to_thread.run_sync(
            tenure_cli, "approvals", "list", "--backend", pg_url
        )
        request_id = rt.pending_approvals()[0].id
        assert listed.returncode == 0 and request_id in listed.stdout
        assert "pay-needs-approval" in listed.stdout

        async def answer(verb: str, who: str, out: list[subprocess.CompletedProcess[str]]) -> None:
            out.append(
                await anyio.to_thread.run_sync(
                    tenure_cli,
                    "approvals",
                    verb,
                    request_id,
                    "--key",
                    str(keys[who].path),
                    "--backend",
                    pg_url,
                )
            )

        answers: list[subprocess.CompletedProcess[str]] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(answer, "approve", "bob", answers)
            tg.start_soon(answer, "deny", "eve", answers)
        winners = [a for a in answers if a.returncode == 0]
        losers = [a for a in answers if a.returncode == 1]
        assert len(winners) == 1 and len(losers) == 1
        assert "was already decided" in losers[0].stderr
        with anyio.fail_after(10):
            if "granted" in winners[0].stdout:
                assert await handle.result() == "paid 120"
            else:
                with pytest.raises(PolicyDenied):
                    await handle.result()
    records = [
        json.loads(line)
        for line in (handle.evidence_path / "ledger.jsonl").read_text().splitlines()
    ]
    answered = [r for r in records if r["kind"] in ("approval.granted", "approval.denied")]
    assert len(answered) == 1
    assert answered[0]["approver"] in {"bob", "eve"}
    assert verify_run(handle.evidence_path).verdict == "verified"
    verify = await export_and_verify(pg_url, handle.run_id, tmp_path / "export")
    assert verify.returncode == 0, verify.stdout + verify.stderr


async def test_a_board_row_rewritten_to_look_harmless_is_not_signed_by_an_approver(
    pg_url: str, tmp_path: Path
) -> None:
    """The attack: whoever can write the shared database rewrites a waiting request's row
    so that ``tenure approvals list --backend`` shows a payment of 1 instead of 120. The
    approver's CLI recomputes the digests from what it shows: the row is marked NOT
    SIGNABLE, ``approve`` signs nothing, and the step stays held."""
    await upgrade(pg_url)
    bob = generate_key_files(tmp_path / "bob")
    policy = tmp_path / "approval.toml"
    policy.write_text(APPROVAL + f'\n[approvers]\nbob = "{bob.public_text}"\n')
    async with Runtime(backend=pg_url, evidence_dir=tmp_path / "runs", policies=policy) as rt:
        handle = await rt.start(payer, 120, principal="alice", ttl=60)
        with anyio.fail_after(10):
            while True:  # filed by the run's own task
                if rt.pending_approvals():
                    break
                await anyio.sleep(0.02)
        request_id = rt.pending_approvals()[0].id
        db = await asyncpg.connect(pg_url)
        try:
            await db.execute(
                "UPDATE tenure_approvals SET request = jsonb_set(request, "
                "'{details,args_encoding}', to_jsonb($2::text)) WHERE id = $1",
                request_id,
                args_encoding([[1], {}]),
            )
        finally:
            await db.close()
        listed = await anyio.to_thread.run_sync(
            tenure_cli, "approvals", "list", "--backend", pg_url
        )
        assert (
            listed.returncode == 0 and "NOT SIGNABLE: its arguments do not match" in listed.stdout
        )
        answered = await anyio.to_thread.run_sync(
            tenure_cli,
            "approvals",
            "approve",
            request_id,
            "--key",
            str(bob.path),
            "--backend",
            pg_url,
        )
        assert answered.returncode == 1 and f"{request_id} not signed" in answered.stderr
        assert [r.id for r in rt.pending_approvals()] == [request_id]
        handle.cancel()
    records = (handle.evidence_path / "ledger.jsonl").read_text()
    assert '"approval.granted"' not in records


async def test_a_database_at_an_older_schema_is_refused_until_upgraded(
    pg_url: str, evidence: Path, policy: Path
) -> None:
    """A database left at schema 1 by an older Tenure: refused with what to run, then
    ``upgrade`` applies only what is missing."""
    from tenure.runtime.backends._pg_schema import MIGRATIONS

    conn = await asyncpg.connect(pg_url)
    try:
        async with conn.transaction():
            await conn.execute(
                "CREATE TABLE tenure_schema (version integer PRIMARY KEY, "
                "applied_at timestamptz NOT NULL DEFAULT clock_timestamp())"
            )
            await conn.execute(MIGRATIONS[0][1])
            await conn.execute("INSERT INTO tenure_schema (version) VALUES (1)")
    finally:
        await conn.close()
    with pytest.raises(GovernanceUnavailable) as caught:
        async with Runtime(backend=pg_url, evidence_dir=evidence, policies=policy):
            pass
    assert f"at version 1, older than this Tenure's {SCHEMA_VERSION}" in caught.value.reason
    assert await upgrade(pg_url) == list(range(2, SCHEMA_VERSION + 1))
    assert await upgrade(pg_url) == []
    async with Runtime(backend=pg_url, evidence_dir=evidence, policies=policy) as rt:
        assert await rt.run(ticking_once, principal="alice", ttl=10) == 1
