"""Builders for evidence tests: small, real ledgers written through :class:`Ledger`.

Leases and approvals are signed directly with ``_dsse.sign_envelope`` (minimal claims:
``lid``, ``run``, ``exp``, ``scopes``, ``parent``) so these tests do not depend on the lease
module. No tests live here.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tenure.crypto import SigningKey, b64e, canonical, digest, sign_envelope
from tenure.evidence import (
    APPROVAL_PAYLOAD_TYPE,
    ATTESTATION_NAME,
    INTOTO_PAYLOAD_TYPE,
    LEASE_PAYLOAD_TYPE,
)
from tenure.evidence._batch import lease_batch_payload
from tenure.evidence._format import LEASE_BATCH_PAYLOAD_TYPE
from tenure.evidence._ledger import Ledger
from tenure.evidence._ledger_io import LedgerConfig

HOUR_US = 3600 * 1_000_000


def now_us() -> int:
    return time.time_ns() // 1000


def lease_envelope(
    key: SigningKey, lid: str, run: str, exp: int, scopes: list[str], parent: str | None
) -> dict[str, Any]:
    claims = {"lid": lid, "run": run, "exp": exp, "scopes": scopes, "parent": parent}
    return sign_envelope(key, LEASE_PAYLOAD_TYPE, canonical(claims))


@dataclass
class RunBuilder:
    """Writes a run the way the runtime would, one governed step at a time."""

    evidence: Path
    run_id: str = "run-0001"
    key: SigningKey = field(default_factory=SigningKey.generate)
    config: LedgerConfig = field(
        default_factory=lambda: LedgerConfig(checkpoint_every=1000, checkpoint_interval=0)
    )
    witness: bool = True
    attestation: bool = True
    ledger: Ledger = field(init=False)
    deadline: int = field(init=False)
    steps: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        run_dir = self.evidence / self.run_id
        wdir = self.evidence / ".witness" if self.witness else None
        self.ledger = Ledger.create(run_dir, self.run_id, self.key, self.config, wdir)
        self.deadline = now_us() + HOUR_US
        att = ""
        if self.attestation:
            statement = {
                "_type": "https://in-toto.io/Statement/v1",
                "subject": [{"name": "tenure-run", "digest": {"sha256": "00" * 32}}],
                "predicateType": "https://tenure.dev/attestation/v1",
                "predicate": {"python": "3.11"},
            }
            payload = canonical(statement)
            env = sign_envelope(self.key, INTOTO_PAYLOAD_TYPE, payload)
            (run_dir / ATTESTATION_NAME).write_text(json.dumps(env))
            att = digest(payload)
        self.ledger.append(
            "run.start",
            {
                "run": self.run_id,
                "principal": "alice",
                "scopes": ["web:read"],
                "ttl_ms": 3_600_000,
                "deadline": self.deadline,
                "agent": "researcher",
                "args": digest(b"[]"),
                "policy": digest(b"policy"),
                "attestation": att,
                "key": self.key.key_id,
                "pubkey": b64e(self.key.public_raw),
                "runtime": "0.1.0",
                "config": {},
            },
        )

    @property
    def run_dir(self) -> Path:
        return self.ledger.run_dir

    def issue(
        self,
        lid: str,
        *,
        parent: str | None = None,
        exp: int | None = None,
        scopes: list[str] | None = None,
    ) -> int:
        exp = self.deadline if exp is None else exp
        scopes = ["web:read"] if scopes is None else scopes
        env = lease_envelope(self.key, lid, self.run_id, exp, scopes, parent)
        return self.ledger.append(
            "lease.issued",
            {
                "lease": lid,
                "parent": parent or "",
                "subject": "agent:researcher",
                "scopes": scopes,
                "exp": exp,
                "envelope": env,
            },
        )

    def batch(
        self,
        leases: list[dict[str, Any]],
        *,
        purpose: str = "issued",
        signed: list[str] | None = None,
        run: str | None = None,
        key: SigningKey | None = None,
    ) -> int:
        """A ``lease.batch`` of ``leases`` (minimal claims, ``run`` added); ``signed``: the
        digests the batch signs instead of the payloads' own, ``run``/``key``: another run's
        batch or another signer (for attacks)."""
        payloads = [canonical({"run": self.run_id, "exp": self.deadline, **c}) for c in leases]
        digests = signed if signed is not None else [digest(p) for p in payloads]
        body = lease_batch_payload(run or self.run_id, digests)
        env = sign_envelope(key or self.key, LEASE_BATCH_PAYLOAD_TYPE, body)
        return self.ledger.append(
            "lease.batch",
            {"purpose": purpose, "envelope": env, "leases": [b64e(p) for p in payloads]},
        )

    def carried_start(
        self, step: str, lid: str, effect: str = "allow", decision: int = -1, target: str = "search"
    ) -> int:
        """A ``step.start`` carrying its own decision (the batch format's outright allow)."""
        return self.ledger.append(
            "step.start",
            {
                "step": step,
                "lease": lid,
                "action": "execute_tool",
                "target": target,
                "caller": "researcher",
                "effect": effect,
                "rule": "r1",
                "reason": "",
                "decision": decision,
                "approval": -1,
                "parent": "",
                "depth": 1,
                "args": digest(step.encode()),
            },
        )

    def revoke(self, lid: str, cascade: list[str] | None = None) -> int:
        return self.ledger.append(
            "lease.revoked",
            {"lease": lid, "reason": "test", "by": "alice", "cascade": cascade or []},
        )

    def decision(self, step: str, lid: str, effect: str = "allow", target: str = "search") -> int:
        return self.ledger.append(
            "decision",
            {
                "step": step,
                "lease": lid,
                "action": "execute_tool",
                "target": target,
                "caller": "researcher",
                "effect": effect,
                "rule": "r1",
                "reason": "",
                "args": digest(step.encode()),
            },
        )

    def approval(self, step: str) -> int:
        env = sign_envelope(
            self.key, APPROVAL_PAYLOAD_TYPE, canonical({"step": step, "approver": "bob"})
        )
        return self.ledger.append(
            "approval.granted",
            {
                "request": "rq-" + step,
                "step": step,
                "approver": "bob",
                "reason": "",
                "envelope": env,
            },
        )

    def step_start(
        self, step: str, lid: str, decision: int, approval: int = -1, target: str = "search"
    ) -> int:
        return self.ledger.append(
            "step.start",
            {
                "step": step,
                "lease": lid,
                "action": "execute_tool",
                "target": target,
                "decision": decision,
                "approval": approval,
                "parent": "",
                "depth": 1,
                "args": digest(step.encode()),
            },
        )

    def step_end(self, step: str) -> int:
        return self.ledger.append(
            "step.end",
            {"step": step, "status": "ok", "result": digest(b"r"), "error": "", "message": ""},
            flush=False,
        )

    def step(self, lid: str = "L0") -> str:
        """One complete governed step: decision, step.start, step.end."""
        self.steps += 1
        step = f"s{self.steps}"
        d = self.decision(step, lid)
        self.step_start(step, lid, d)
        self.step_end(step)
        return step

    def end(self, status: str = "ok") -> None:
        self.ledger.append(
            "run.end", {"status": status, "error": "", "check": "", "reason": "", "result": ""}
        )
        self.ledger.close()


def build_run(evidence: Path, steps: int = 3, **kw: Any) -> RunBuilder:
    """A complete, valid, closed run: run.start, root lease, ``steps`` steps, run.end."""
    b = RunBuilder(evidence, **kw)
    b.issue("L0")
    for _ in range(steps):
        b.step()
    b.end()
    return b


def read_lines(run_dir: Path) -> list[bytes]:
    return (run_dir / "ledger.jsonl").read_bytes().splitlines(keepends=True)


def write_lines(run_dir: Path, lines: list[bytes]) -> None:
    (run_dir / "ledger.jsonl").write_bytes(b"".join(lines))


def records(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in read_lines(run_dir)]
