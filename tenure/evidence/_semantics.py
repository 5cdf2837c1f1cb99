"""The verifier's per-record-kind checks: leases, decisions, approvals, steps, checkpoints.

:class:`Semantics` is fed each record (already parsed by the reader and chain-checked by
:mod:`._verify`) through :attr:`Semantics.handlers`. The rules:

- ``run.start`` first (its ``pubkey`` must be the trusted key); ``deadline`` bounds every
  lease's ``exp``.
- the lease records (``lease.issued``, ``lease.renewed``, ``lease.batch``,
  ``lease.revoked``) follow :mod:`._lease_rules`, whose :class:`~._lease_rules.LeaseRules`
  this class extends with the leases it has seen.
- every ``step.start`` references an earlier, unused ``decision`` with the same step,
  lease, action and target and effect ``allow`` (or ``require_approval`` plus an earlier
  ``approval.granted`` for that step) — or carries its own decision, which must then be
  ``allow`` — under a lease issued earlier in this ledger, not revoked (itself or an
  ancestor) before the step, with ``exp + CLOCK_SKEW_US >= t``. An agent step runs under
  the lease issued for it: a child of the lease it was decided under, for that agent.
- ``attestation`` (the ledger's copy) and ``attestation.intoto.json`` verify (DSSE
  :data:`~._format.INTOTO_PAYLOAD_TYPE`) and their payload's SHA-256 equals ``run.start``'s
  ``attestation``.

Every failure raises :class:`Fail` with a stable code (:data:`~._report_model.CODES`).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ..crypto import digest, verify_envelope
from ._approval_check import ApprovalCheck
from ._fail import Fail, raw_key
from ._format import (
    APPROVAL_DENIED,
    APPROVAL_GRANTED,
    APPROVAL_REQUESTED,
    ATTESTATION,
    ATTESTATION_NAME,
    CHECKPOINT,
    DECISION,
    INTOTO_PAYLOAD_TYPE,
    INTOTO_STATEMENT_TYPE,
    LEASE_BATCH,
    LEASE_ISSUED,
    LEASE_RENEWED,
    LEASE_REVOKED,
    RUN_END,
    RUN_END_STATUSES,
    RUN_START,
    STEP_START,
)
from ._lease_rules import LeaseRules, LeaseState
from ._merkle import CompactTree
from ._note import NoteError, open_checkpoint, origin_for
from ._reader import LedgerReadError, loads_bounded, read_evidence_file
from ._report_model import Finding, VerifyReport

__all__ = ["CLOCK_SKEW_US", "Semantics"]

#: Tolerance for the lease-expiry check: a step may start up to 2 s after ``exp`` (clocks
#: of the wall time written in ``t`` and the one the lease was minted with may differ).
CLOCK_SKEW_US: Final = 2_000_000
#: The attestation lists every agent's and tool's code digest; generous, still bounded.
MAX_ATTESTATION_BYTES: Final = 16 << 20


class Semantics(LeaseRules):
    """Per-kind checks over one ledger, in order; the state they need between records."""

    def __init__(self, rep: VerifyReport, key: Ed25519PublicKey, run_id: str) -> None:
        self.rep = rep
        self.key = key
        self.key_raw = raw_key(key)
        self.run_id = run_id
        self.origin = origin_for(run_id)
        self.deadline: int | None = None
        self.attestation: str | None = None
        self.attestation_in_ledger = False
        self.leases: dict[str, LeaseState] = {}
        self.decisions: dict[int, tuple[Any, Any, Any, Any, str]] = {}
        self.approvals: dict[int, str] = {}
        self.approval_check = ApprovalCheck(key)
        self.run_end: int | None = None
        self.last_cp_size = 0
        self.last_cp_root: str | None = None
        self.tree = CompactTree()
        self.handlers: dict[str, Callable[[dict[str, Any], int], None]] = {
            RUN_START: self._run_start,
            LEASE_ISSUED: self._lease_issued,
            LEASE_RENEWED: self._lease_renewed,
            LEASE_REVOKED: self._lease_revoked,
            LEASE_BATCH: self._lease_batch,
            DECISION: self._decision,
            ATTESTATION: self._attestation_record,
            APPROVAL_REQUESTED: self._approval_requested,
            APPROVAL_GRANTED: self._approval_granted,
            APPROVAL_DENIED: self._approval_denied,
            STEP_START: self._step_start,
            CHECKPOINT: self._checkpoint,
            RUN_END: self._run_end,
        }

    # ------------------------------------------------------------ attestation
    def _attestation_payload(self, env: Any, where: str, n: int | None) -> bytes:
        try:
            payload = verify_envelope(env, self.key, INTOTO_PAYLOAD_TYPE)
            statement = loads_bounded(payload)
        except ValueError as exc:
            raise Fail("attestation.envelope", n, where, str(exc)) from exc
        if not isinstance(statement, dict) or statement.get("_type") != INTOTO_STATEMENT_TYPE:
            raise Fail(
                "attestation.envelope",
                n,
                where,
                f"payload is not an in-toto {INTOTO_STATEMENT_TYPE}",
            )
        return payload

    def _attestation_record(self, rec: dict[str, Any], n: int) -> None:
        # The ledger carries the envelope too, so the attestation is as durable as the
        # records; the standalone file is a convenience copy for in-toto tooling.
        payload = self._attestation_payload(rec.get("envelope"), ATTESTATION, n)
        got = digest(payload)
        if got != self.attestation:
            raise Fail(
                "attestation.digest",
                n,
                ATTESTATION,
                f"envelope digest {got} is not run.start's {self.attestation}",
            )
        self.attestation_in_ledger = True

    def check_attestation_file(self, run_dir: Path) -> None:
        """Check ``attestation.intoto.json`` against ``run.start`` (after the scan)."""
        path = run_dir / ATTESTATION_NAME
        want = self.attestation
        try:
            data = read_evidence_file(path, MAX_ATTESTATION_BYTES)
        except FileNotFoundError:
            data = None
        except (LedgerReadError, OSError) as exc:
            raise Fail("evidence.unreadable", None, ATTESTATION_NAME, str(exc)) from exc
        if data is None:
            if self.attestation_in_ledger:
                self.rep.warnings.append(
                    Finding(
                        "attestation.file_missing",
                        f"{ATTESTATION_NAME} is missing; the ledger's copy of the attestation "
                        "verified",
                    )
                )
            elif want:
                raise Fail(
                    "attestation.missing",
                    0,
                    RUN_START,
                    f"{ATTESTATION_NAME} is missing; run.start names {want}",
                )
            else:
                self.rep.warnings.append(
                    Finding("attestation.none", "no attestation: run.start names none")
                )
            return
        try:
            env = loads_bounded(data)
        except ValueError as exc:
            raise Fail("attestation.envelope", None, ATTESTATION_NAME, str(exc)) from exc
        payload = self._attestation_payload(env, ATTESTATION_NAME, None)
        got = digest(payload)
        if not want:
            self.rep.warnings.append(
                Finding(
                    "attestation.none",
                    f"{ATTESTATION_NAME} is present but run.start names no digest",
                )
            )
        elif got != want:
            raise Fail(
                "attestation.digest",
                0,
                RUN_START,
                f"attestation digest mismatch: {ATTESTATION_NAME} has {got}, "
                f"run.start names {want}",
            )

    # ------------------------------------------------------------ per-kind checks
    def _run_start(self, rec: dict[str, Any], n: int) -> None:
        if n != 0:
            raise Fail("run.start", n, RUN_START, "run.start may only be the first record")
        run = self._str(rec, "run", n)
        if run != self.run_id:
            raise Fail("run.binding", 0, RUN_START, f"run id {run!r} is not {self.run_id!r}")
        pub = self._str(rec, "pubkey", n)
        try:
            raw = base64.b64decode(pub, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise Fail("record.field", 0, RUN_START, "field 'pubkey' is not base64") from exc
        if raw != self.key_raw:
            raise Fail(
                "key.mismatch",
                0,
                RUN_START,
                f"run.start names public key {pub}, not the trusted key "
                f"{base64.b64encode(self.key_raw).decode()}",
            )
        deadline = rec.get("deadline")
        self.deadline = deadline if type(deadline) is int else None
        att = rec.get("attestation")
        self.attestation = att if isinstance(att, str) and att else None

    def _decision(self, rec: dict[str, Any], n: int) -> None:
        effect = rec.get("effect")
        if effect == "allow" or effect == "require_approval":
            get = rec.get
            self.decisions[n] = (get("step"), get("lease"), get("action"), get("target"), effect)

    def _approval_requested(self, rec: dict[str, Any], n: int) -> None:
        problem = self.approval_check.requested(rec)
        if problem is not None:
            raise Fail("approval.request", n, rec["kind"], problem)

    def _approval_granted(self, rec: dict[str, Any], n: int) -> None:
        self._approval_denied(rec, n)
        self.approvals[n] = self._str(rec, "step", n)

    def _approval_denied(self, rec: dict[str, Any], n: int) -> None:
        problem = self.approval_check.answered(rec)
        if problem is not None:
            raise Fail("approval.envelope", n, rec["kind"], problem)

    def _step_start(self, rec: dict[str, Any], n: int) -> None:
        get = rec.get
        step, lid, action = get("step"), get("lease"), get("action")
        lease = self.leases.get(lid) if type(lid) is str else None
        if "effect" in rec:
            self._own_decision(rec, n, lease)
        else:
            self._referenced_decision(rec, n, lease)
        if lease is None:
            raise Fail(
                "step.lease", n, STEP_START, f"lease {lid!r} was never issued in this ledger"
            )
        if action == "invoke_agent":
            if lease.started:
                raise Fail(
                    "step.lease",
                    n,
                    STEP_START,
                    f"agent step {step!r} runs under lease {lid}, which already started "
                    "another agent step (each agent step gets a lease of its own)",
                )
            lease.started = True
        self._lease_holds(rec, n, lease)

    def _own_decision(self, rec: dict[str, Any], n: int, lease: LeaseState | None) -> None:
        """A step that carries its own decision: allowed outright, nothing else."""
        get = rec.get
        step, effect = get("step"), get("effect")
        if effect != "allow" or get("decision", -1) != -1 or get("approval", -1) != -1:
            raise Fail(
                "step.decision",
                n,
                STEP_START,
                f"step {step!r} carries decision {effect!r} (decision {get('decision')!r}, "
                f"approval {get('approval')!r}): a step.start may carry only an outright allow; "
                "any other decision is a record of its own",
            )
        for name in ("rule", "reason", "caller"):
            if type(get(name)) is not str:
                raise Fail(
                    "record.field", n, STEP_START, f"field {name!r} is missing or not a string"
                )
        target = get("target")
        if (
            get("action") == "invoke_agent"
            and lease is not None
            and lease.subject is not None
            and lease.subject != f"agent:{target}"
        ):
            raise Fail(
                "step.decision",
                n,
                STEP_START,
                f"step {step!r} was decided for agent {target!r} but runs under lease "
                f"{get('lease')}, issued for {lease.subject!r}",
            )

    def _referenced_decision(self, rec: dict[str, Any], n: int, lease: LeaseState | None) -> None:
        """A step whose decision is an earlier ``decision`` record (and maybe a grant)."""
        get = rec.get
        step, lid, action, target = get("step"), get("lease"), get("action"), get("target")
        d = get("decision")
        dec = self.decisions.pop(d, None) if type(d) is int else None
        if dec is None:
            raise Fail(
                "step.decision",
                n,
                STEP_START,
                f"step {step!r} has no allowing decision: record {d!r} is not an earlier, "
                "unused decision with effect allow or require_approval",
            )
        # A tool runs under the lease its decision was taken under; an agent runs under a
        # new lease whose parent is the delegating lease the decision names ("" = root).
        if action == "invoke_agent":
            decided_under = (lease.parent or "") if lease is not None else None
        else:
            decided_under = lid
        if dec[:4] != (step, decided_under, action, target):
            raise Fail(
                "step.decision",
                n,
                STEP_START,
                f"decision {d} is for step/lease/action/target {list(dec[:4])}, "
                f"not {[step, decided_under, action, target]}",
            )
        if dec[4] == "require_approval":
            a = get("approval")
            if type(a) is not int or self.approvals.pop(a, None) != step:
                raise Fail(
                    "step.approval",
                    n,
                    STEP_START,
                    f"step {step!r} needed approval (decision {d}) but record {a!r} is not an "
                    "earlier, unused approval.granted for it",
                )

    def _lease_holds(self, rec: dict[str, Any], n: int, lease: LeaseState) -> None:
        """The step's lease is unrevoked (with its ancestors) and unexpired at its start."""
        step, lid = rec.get("step"), rec.get("lease")
        cur: LeaseState | None = lease
        name = lid
        while cur is not None:
            if cur.revoked_at is not None:
                raise Fail(
                    "step.revoked",
                    n,
                    STEP_START,
                    f"step {step!r} ran under lease {lid} after lease {name} was revoked "
                    f"(record {cur.revoked_at})",
                )
            name = cur.parent
            cur = self.leases.get(name) if name is not None else None
        t = rec["t"]
        if t > lease.exp + CLOCK_SKEW_US:
            raise Fail(
                "step.expired",
                n,
                STEP_START,
                f"step {step!r} started at {t} under lease {lid}, which expired at {lease.exp} "
                f"(tolerance {CLOCK_SKEW_US} µs)",
            )

    def _checkpoint(self, rec: dict[str, Any], n: int) -> None:
        if n == 0:
            raise Fail("run.start", 0, CHECKPOINT, "the first record must be run.start")
        size = rec["size"]
        if size != n:
            raise Fail(
                "checkpoint.record",
                n,
                CHECKPOINT,
                f"checkpoint size {size} must equal its index {n}",
            )
        root = self.tree.root()
        if rec["root"] != root.hex():
            raise Fail(
                "checkpoint.root",
                n,
                CHECKPOINT,
                f"checkpoint root does not match records 0..{n - 1}: a record among "
                f"{self.last_cp_size}..{n - 1} was altered, inserted or removed",
            )
        try:
            cp = open_checkpoint(rec["note"], self.origin, self.key)
        except NoteError as exc:
            raise Fail("checkpoint.signature", n, CHECKPOINT, f"checkpoint note: {exc}") from exc
        if cp.size != size or cp.root != root:
            raise Fail(
                "checkpoint.record",
                n,
                CHECKPOINT,
                "checkpoint note does not sign the recorded size and root",
            )
        self.last_cp_size = n
        self.last_cp_root = root.hex()
        self.rep.checkpoints += 1

    def _run_end(self, rec: dict[str, Any], n: int) -> None:
        status = rec["status"]
        if status not in RUN_END_STATUSES:
            raise Fail(
                "run.end", n, RUN_END, f"status {status!r} is not one of {sorted(RUN_END_STATUSES)}"
            )
        self.run_end = n
        self.rep.run_status = status
