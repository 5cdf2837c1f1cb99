"""Attacks on the delegation queue: a worker runs a task only under a lease chain signed by
a key it trusts (the operator's certificate, else the enqueuing member's registered key),
and only while nothing of that chain is revoked. Every refusal leaves the run's trusted
state (segments, budget counters, the worker's evidence) as it was."""

from __future__ import annotations

import json
import secrets
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from tenure import Runtime, SignatureInvalid
from tenure.crypto import SigningKey, b64d, b64e, generate_key_files
from tenure.evidence._attest import CodeItem
from tenure.evidence._certs import CERT_NAME, certify
from tenure.runtime.backends import TaskOutcome
from tenure.runtime.backends._pg import PgBackend, upgrade
from tenure.runtime.kernel._authority import LeaseAuthority
from tenure.runtime.kernel._lease import wall_us

from .conftest import ROOT, WorkerProcess
from .pool_agents import lingerer, planner

ALLOW = 'version = 1\ndefault = "deny"\n\n[[rules]]\nid = "all"\neffect = "allow"\n'


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "allow.toml"
    path.write_text(ALLOW)
    return path


def _forged_payload(run_id: str, marker: Path, key: SigningKey, **issuer: Any) -> dict[str, Any]:
    """A task payload exactly like a real one, its leases signed by ``key``."""
    authority = LeaseAuthority(key, "tenure:forger")
    now = wall_us()
    root = authority.issue_root(
        run_id=run_id,
        principal="mallory",
        subject="forged",
        scopes=["notes:read"],
        expires_us=now + 60_000_000,
        hard_deadline_us=now + 60_000_000,
        policy="sha256:" + "0" * 64,
        attestation="sha256:" + "0" * 64,
        epoch=0,
    )
    child = authority.issue_child(root, subject="lingerer", scopes=[], expires_us=now + 60_000_000)
    return {
        "agent": "lingerer",
        "code": CodeItem.of("agent", "lingerer", lingerer.func).digest,
        "args": [str(marker)],
        "kwargs": {},
        "run": run_id,
        "principal": "mallory",
        "lease": child.envelope,
        "lease_id": child.claims.lid,
        "chain": [root.envelope, child.envelope],
        "upstream": [],
        "issuer": {"key": key.key_id, "pubkey": b64e(key.public_raw), **issuer},
        "segment": f"{run_id}.2.{secrets.token_hex(4)}",
        "parent_segment": run_id,
        "parent_index": 5,
        "ttl": 60.0,
        "trace": {},
    }


async def _insert(backend: PgBackend, run_id: str, payload: dict[str, Any], by: str) -> str:
    """The attack: a row written straight into the queue table (no fenced enqueue)."""
    task_id = "task_" + secrets.token_hex(8)
    await backend.db.execute(
        "INSERT INTO tenure_tasks (id, pool, run_id, state, payload, enqueued_by) "
        "VALUES ($1, 'research', $2, 'queued', $3, $4)",
        task_id,
        run_id,
        payload,
        by,
    )
    await backend.db.execute("SELECT pg_notify('tenure_queue', 'research')")
    return task_id


async def _ended(backend: PgBackend, task_id: str) -> TaskOutcome:
    with anyio.fail_after(30):
        while True:
            outcome = await backend.queue.wait_outcome(task_id, 10)
            if outcome.state not in ("queued", "claimed"):
                return outcome


async def _assert_untouched(backend: PgBackend, run_id: str, worker: WorkerProcess) -> None:
    """Nothing of the run exists: no segment, no budget taken, no evidence on the worker."""
    assert await backend.evidence.segments(run_id) == []
    assert await backend.budgets.used(run_id) == {}
    assert not any(worker.evidence.glob(f"{run_id}*"))
    assert worker.proc.poll() is None  # it refused the task and goes on serving


@pytest.mark.parametrize("queued_by", ["no-member", "a-live-runtime"])
async def test_a_forged_task_signed_by_a_self_made_key_is_refused_at_claim(
    pg_url: str,
    tmp_path: Path,
    policy: Path,
    workers: Callable[..., WorkerProcess],
    queued_by: str,
) -> None:
    """The attack: someone with write access to the queue table inserts a task whose lease
    chain they signed with their own key, and names that key in the payload. The worker
    trusts only the key the enqueuing member registered: with no such member, or with a
    real member whose key is another, the task is refused before anything of it runs."""
    await upgrade(pg_url)
    worker = workers(pg_url, "w1")
    marker = tmp_path / "forged-ran"
    run_id = "run_" + secrets.token_hex(8)
    async with Runtime(backend=pg_url, evidence_dir=tmp_path / "runs", policies=policy) as rt:
        link = rt._link
        assert link is not None and link.plane.member is not None
        backend = link.backend
        assert isinstance(backend, PgBackend)
        by = link.plane.member.id if queued_by == "a-live-runtime" else "m_" + "0" * 16
        payload = _forged_payload(run_id, marker, SigningKey.generate())
        outcome = await _ended(backend, await _insert(backend, run_id, payload, by))
        assert outcome.state == "failed" and outcome.error is not None
        assert outcome.error["type"] == "SignatureInvalid"
        expected = "lease.signature" if queued_by == "a-live-runtime" else "lease.issuer"
        assert outcome.error["check"] == expected
        assert not marker.exists()
        await _assert_untouched(backend, run_id, worker)


async def test_a_worker_holding_the_operator_key_refuses_a_key_it_did_not_certify(
    pg_url: str, tmp_path: Path, policy: Path, workers: Callable[..., WorkerProcess]
) -> None:
    """The attack, against a worker given the operator's public key: the attacker also
    rewrote the enqueuing member's registered key in the database and ships a certificate
    signed by a key of their own. Neither counts: only the operator's certificate does.
    A runtime whose key the operator certified delegates to the same worker as usual; one
    whose key is not certified is refused (its parent gets ``SignatureInvalid``)."""
    await upgrade(pg_url)
    operator = generate_key_files(tmp_path / "operator")
    worker = workers(
        pg_url, "w1", extra=["--operator-key", str(tmp_path / "operator" / "tenure.pub")]
    )
    api = generate_key_files(tmp_path / "api")
    (tmp_path / "api" / CERT_NAME).write_text(
        json.dumps(certify(operator, api.public_key, "api-server"))
    )
    async with Runtime(
        backend=pg_url, evidence_dir=tmp_path / "runs", policies=policy, key=api.path
    ) as rt:
        link = rt._link
        assert link is not None and link.plane.member is not None
        backend = link.backend
        assert isinstance(backend, PgBackend)
        mallory = SigningKey.generate()
        rogue_cert = certify(SigningKey.generate(), mallory.public_key, "api-server")
        await backend.db.execute(
            "UPDATE tenure_members SET info = info || $2::jsonb WHERE id = $1",
            link.plane.member.id,
            {"pubkey": b64e(mallory.public_raw), "certificate": rogue_cert},
        )
        run_id = "run_" + secrets.token_hex(8)
        marker = tmp_path / "forged-ran"
        payload = _forged_payload(run_id, marker, mallory, certificate=rogue_cert)
        outcome = await _ended(
            backend, await _insert(backend, run_id, payload, link.plane.member.id)
        )
        assert outcome.state == "failed" and outcome.error is not None
        assert (outcome.error["type"], outcome.error["check"]) == (
            "SignatureInvalid",
            "lease.issuer",
        )
        assert not marker.exists()
        await _assert_untouched(backend, run_id, worker)
        result = await rt.run(planner, ["a", "b"], principal="alice", scopes={"notes:read"})
        assert result == ["NOTES ON A", "NOTES ON B"]
    async with Runtime(
        backend=pg_url, evidence_dir=tmp_path / "uncertified", policies=policy
    ) as rt:
        with anyio.fail_after(30), pytest.raises(SignatureInvalid) as caught:
            await rt.run(planner, ["c"], principal="alice", scopes={"notes:read"})
        assert caught.value.check == "lease.issuer"


async def test_a_task_whose_parent_lease_was_revoked_before_the_claim_is_refused(
    pg_url: str, tmp_path: Path, policy: Path, workers: Callable[..., WorkerProcess]
) -> None:
    """A run delegated a part and its process died before any worker claimed it; then the
    delegating step's lease (the delegated lease's parent, not the delegated lease itself)
    was revoked from another host. The worker that claims the task applies the log up to
    the claim first and refuses the task: nothing of it runs, nothing is written."""
    await upgrade(pg_url)
    marker = tmp_path / "running"
    argv = [sys.executable, "-m", "tests.distributed._host", pg_url, str(tmp_path / "host")]
    backend = await PgBackend.connect(pg_url)
    try:
        async with await anyio.open_process(
            [*argv, str(policy), str(marker)], cwd=ROOT, stderr=subprocess.DEVNULL
        ) as host:
            assert host.stdout is not None
            with anyio.fail_after(30):
                line = await BufferedByteReceiveStream(host.stdout).receive_until(b"\n", 1000)
            run_id = line.decode().split()[1]
            with anyio.fail_after(30):
                while True:  # queued by the host's run (woken by the queue's NOTIFY)
                    await backend.queue.wait_queued("research", 5)
                    row = await backend.db.fetchrow(
                        "SELECT id, payload FROM tenure_tasks WHERE run_id = $1", run_id
                    )
                    if row is not None:
                        break
            host.send_signal(signal.SIGKILL)  # it can no longer revoke anything itself
            await host.wait()
        chain = row["payload"]["chain"]
        parent = json.loads(b64d(chain[-2]["payload"]))
        assert parent["lid"] != row["payload"]["lease_id"]
        await backend.log.append(
            "revoke", {"target": parent["lid"], "reason": "incident", "by": "oncall"}
        )
        used = await backend.budgets.used(run_id)
        segments = await backend.evidence.segments(run_id)
        worker = workers(pg_url, "w1")
        outcome = await _ended(backend, row["id"])
        assert outcome.state == "failed" and outcome.error is not None
        assert (outcome.error["type"], outcome.error["check"]) == ("LeaseRevoked", "lease.revoked")
        assert parent["lid"] in outcome.error["reason"]
        assert not marker.exists()
        assert await backend.budgets.used(run_id) == used
        assert await backend.evidence.segments(run_id) == segments  # the host's root only
        assert not any(worker.evidence.glob(f"{run_id}*"))
        assert worker.proc.poll() is None
    finally:
        await backend.close()
