"""Offline verification of a run directory: signatures, chain, Merkle roots, semantics.

A third party needs only the run directory and the runtime's public key. The verifier
streams ``ledger.jsonl`` once (memory O(log n) for the tree, plus the live leases and
pending decisions) and stops at the first bad record, naming its index and kind.

What is checked, and the decisions taken where the format leaves room:

- **Lines**: every line ends in ``\\n`` and parses as a JSON object. A final line without
  ``\\n``, or a final line that does not parse, is a *torn tail* (a write cut short by a
  crash): reported (``torn_tail``), never counted, never accepted. It cannot hide earlier
  tampering: everything before it is checked as usual, and if a signed checkpoint covers
  its position the ledger is reported truncated.
- **Chain**: ``i`` equals the line number, ``prev`` the hex leaf hash of the previous line
  (64 zeros first). A break names the record whose check failed.
- **Checkpoints**: every ``checkpoint`` record has ``size == i`` (the writer checkpoints
  the tree *before* that record), ``root`` equal to the RFC 9162 root of records
  ``0..size-1``, and a C2SP note with the same size and root signed by the trusted key
  under the run's origin ``tenure.local/<run_id>``. The ``checkpoint`` file must verify the
  same way; its root must equal the root of the first ``size`` records and the ledger must
  hold at least ``size`` records (else: truncated).
- **Unsigned tail**: records after the last signed size (the checkpoint file, or the last
  checkpoint record) are a *warning* when the run has no ``run.end`` (a crash before the
  next checkpoint), but a *failure* when ``run.end`` is among them: a ledger closed by
  :meth:`Ledger.close` always ends under a signed checkpoint, and unsigned records could be
  rewritten by anyone.
- **Witness** (``witness_dir``, default ``<run_dir>/../.witness``): a witness checkpoint
  larger than the run directory's is a rollback (fail); the same size with a different
  root is a split view (fail); a smaller one must match the ledger's root at its size. A
  missing witness is a warning (rollback of the whole directory cannot then be detected).
- **Semantics**: ``run.start`` first (its ``pubkey`` must be the trusted key), nothing but
  ``checkpoint`` after ``run.end``; each ``lease.issued`` / ``lease.renewed`` envelope
  verifies (DSSE ``application/vnd.tenure.lease.v1+json``) and its claims match the record
  (lease id, run, exp; a child's scopes within its parent's; exp within the run deadline);
  every ``step.start`` references an earlier, unused ``decision`` with the same step,
  lease, action and target and effect ``allow`` (or ``require_approval`` plus an earlier
  ``approval.granted`` for that step), under a lease issued earlier in this ledger, not
  revoked (itself or an ancestor) before the step, and with ``exp + CLOCK_SKEW_US >= t``.
- **Attestation**: ``attestation.intoto.json``, when present, verifies (DSSE
  ``application/vnd.in-toto+json``) and its payload's SHA-256 equals ``run.start``'s
  ``attestation``; when ``run.start`` names a digest the file must be present.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import asdict, dataclass, field
from hashlib import sha256
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ..crypto._canonical import digest
from ..crypto._dsse import verify_envelope
from ..crypto._keys import PUBLIC_KEY_NAME, key_id_of, load_public_key
from ._ledger import CHECKPOINT_NAME, LEDGER_NAME, ZERO_HASH, valid_run_id, witness_path
from ._merkle import CompactTree
from ._note import (
    Checkpoint,
    NoteError,
    open_checkpoint,
    origin_for,
    parse_checkpoint,
    parse_note,
)

__all__ = [
    "APPROVAL_PAYLOAD_TYPE",
    "ATTESTATION_NAME",
    "CLOCK_SKEW_US",
    "INTOTO_PAYLOAD_TYPE",
    "LEASE_PAYLOAD_TYPE",
    "VerifyReport",
    "verify_run",
]

#: Tolerance for the lease-expiry check: a step may start up to 2 s after ``exp`` (clocks
#: of the wall time written in ``t`` and the one the lease was minted with may differ).
CLOCK_SKEW_US = 2_000_000
LEASE_PAYLOAD_TYPE = "application/vnd.tenure.lease.v1+json"
APPROVAL_PAYLOAD_TYPE = "application/vnd.tenure.approval.v1+json"
INTOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
INTOTO_STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
ATTESTATION_NAME = "attestation.intoto.json"
_RUN_END_STATUSES = frozenset({"ok", "violation", "error", "cancelled"})


@dataclass
class VerifyReport:
    """The outcome of :func:`verify_run` (``ok`` is the verdict; the rest explains it)."""

    run_dir: str
    ok: bool = False
    run_id: str | None = None
    key_source: str | None = None  # "given" | "run-directory copy"
    key_id: str | None = None
    records: int = 0
    checkpoints: int = 0
    signed_size: int = 0
    witness_size: int | None = None
    torn_tail: bool = False
    torn_bytes: int = 0
    run_status: str = "incomplete"
    first_bad_index: int | None = None
    first_bad_kind: str | None = None
    problem: str | None = None
    warnings: list[str] = field(default_factory=list)

    def failure_line(self) -> str:
        """One line naming the first bad record and what failed (empty when ok)."""
        if self.ok:
            return ""
        if self.first_bad_index is None:
            return f"{self.first_bad_kind or 'run directory'}: {self.problem}"
        return f"record {self.first_bad_index} ({self.first_bad_kind or '?'}): {self.problem}"

    def to_json(self) -> str:
        """The report as a JSON document."""
        return json.dumps(asdict(self), indent=2, sort_keys=True)


class _Fail(Exception):
    def __init__(self, index: int | None, kind: str | None, problem: str) -> None:
        super().__init__(problem)
        self.index = index
        self.kind = kind
        self.problem = problem


class _Lease:
    __slots__ = ("exp", "parent", "revoked_at", "scopes")

    def __init__(self, exp: int, parent: str | None, scopes: frozenset[str]) -> None:
        self.exp = exp
        self.parent = parent
        self.scopes = scopes
        self.revoked_at: int | None = None


def _chain_problem(n: int) -> str:
    if n == 0:
        return "hash chain broken: the first record's 'prev' must be 64 zeros"
    return (
        f"hash chain broken: 'prev' does not match the hash of record {n - 1} (that record "
        "or this field was altered, or records were removed or reordered)"
    )


def _raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _claimed_size(note: bytes | None) -> int | None:
    """The size a checkpoint note claims, unverified (only used to capture a root)."""
    if note is None:
        return None
    try:
        return parse_checkpoint(parse_note(note)[0]).size
    except NoteError:
        return None


def _read_first_record(path: Path) -> dict[str, Any] | None:
    try:
        with path.open("rb") as f:
            line = f.readline(1 << 20)
        rec = json.loads(line)
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


class _Verifier:
    """One pass over a run directory; raises :class:`_Fail` at the first problem."""

    def __init__(
        self, rep: VerifyReport, run_dir: Path, key: Ed25519PublicKey, witness_dir: Path
    ) -> None:
        self.rep = rep
        self.run_dir = run_dir
        self.key = key
        self.key_raw = _raw(key)
        self.witness_dir = witness_dir
        self.run_id = ""
        self.origin = ""
        self.deadline: int | None = None
        self.attestation: str | None = None
        self.attestation_in_ledger = False
        self.leases: dict[str, _Lease] = {}
        self.decisions: dict[int, tuple[Any, Any, Any, Any, str]] = {}
        self.approvals: dict[int, str] = {}
        self.run_end: int | None = None
        self.last_cp_size = 0
        self.tree = CompactTree()
        self._n = 0

    # ------------------------------------------------------------ files around the ledger
    def _open_cp(self, what: str, data: bytes) -> Checkpoint:
        try:
            return open_checkpoint(data, self.origin, self.key)
        except NoteError as exc:
            raise _Fail(None, what, f"{exc} (origin {self.origin!r})") from exc

    def run(self) -> None:
        rep, run_dir = self.rep, self.run_dir
        ledger = run_dir / LEDGER_NAME
        if not ledger.is_file():
            raise _Fail(None, LEDGER_NAME, f"{ledger} is missing")
        first = _read_first_record(ledger)
        run_id = first.get("run") if first is not None else None
        if not isinstance(run_id, str) or not valid_run_id(run_id):
            run_id = run_dir.name  # the first record is checked properly below
        self.run_id, self.origin = run_id, origin_for(run_id)
        rep.run_id = run_id

        # Records first (they name an index), then the files that sign them: the sizes
        # the files claim are read unverified only to know where to capture roots.
        cp_path = run_dir / CHECKPOINT_NAME
        wpath = witness_path(self.witness_dir, run_id)
        cp_data = cp_path.read_bytes() if cp_path.is_file() else None
        w_data = wpath.read_bytes() if wpath.is_file() else None
        want = {size for size in map(_claimed_size, (cp_data, w_data)) if size is not None}
        roots = self._scan(ledger, want)
        n = rep.records

        cp: Checkpoint | None = None
        if cp_data is not None:
            cp = self._open_cp("checkpoint file", cp_data)
        else:
            rep.warnings.append(f"no checkpoint file in {run_dir}: no record is signed by it")
        wcp: Checkpoint | None = None
        if w_data is not None:
            wcp = self._open_cp("witness checkpoint", w_data)
            rep.witness_size = wcp.size
            if cp is None or wcp.size > cp.size:
                have = "none" if cp is None else f"size {cp.size}"
                raise _Fail(
                    None,
                    "witness checkpoint",
                    f"rollback: the witness {wpath} holds a checkpoint of size {wcp.size}, "
                    f"the run directory {have}",
                )
            if wcp.size == cp.size and wcp.root != cp.root:
                raise _Fail(
                    None,
                    "witness checkpoint",
                    f"split view: witness and run directory checkpoints of size {cp.size} "
                    "have different roots",
                )
        else:
            rep.warnings.append(
                f"no witness checkpoint at {wpath}: a rollback of the whole run directory "
                "to an older prefix cannot be detected"
            )

        for what, c in (("checkpoint file", cp), ("witness checkpoint", wcp)):
            if c is None:
                continue
            if n < c.size:
                raise _Fail(
                    n,
                    None,
                    f"ledger truncated: the signed {what} covers {c.size} records, only {n} remain",
                )
            if roots[c.size] != c.root:
                lo = min(self.last_cp_size, c.size - 1)
                raise _Fail(
                    lo,
                    None,
                    f"the {what} (size {c.size}) does not match records 0..{c.size - 1}: "
                    f"a record among {lo}..{c.size - 1} was altered, inserted or removed",
                )
        signed = max(cp.size if cp is not None else 0, self.last_cp_size)
        rep.signed_size = signed
        if signed < n:
            if self.run_end is not None and self.run_end >= signed:
                raise _Fail(
                    self.run_end,
                    "run.end",
                    f"run.end is not covered by a signed checkpoint (signed records: {signed}); "
                    "a closed ledger always ends under one",
                )
            rep.warnings.append(
                f"unsigned tail: records {signed}..{n - 1} are not covered by a signed "
                "checkpoint (the run did not close cleanly)"
            )
        if self.run_end is None:
            rep.warnings.append("the run has no run.end record: it did not finish")
        self._check_attestation()

    def _attestation_payload(self, env: Any, where: str, n: int | None) -> bytes:
        try:
            payload = verify_envelope(env, self.key, INTOTO_PAYLOAD_TYPE)
            statement = json.loads(payload)
        except ValueError as exc:
            raise _Fail(n, where, str(exc)) from exc
        if not isinstance(statement, dict) or statement.get("_type") != INTOTO_STATEMENT_TYPE:
            raise _Fail(n, where, f"payload is not an in-toto {INTOTO_STATEMENT_TYPE}")
        return payload

    def _attestation_record(self, rec: dict[str, Any], n: int) -> None:
        # The ledger carries the envelope too, so the attestation is as durable as the
        # records; the standalone file is a convenience copy for in-toto tooling.
        payload = self._attestation_payload(rec.get("envelope"), "attestation", n)
        got = digest(payload)
        if got != self.attestation:
            raise _Fail(
                n, "attestation", f"envelope digest {got} is not run.start's {self.attestation}"
            )
        self.attestation_in_ledger = True

    def _check_attestation(self) -> None:
        path = self.run_dir / ATTESTATION_NAME
        want = self.attestation
        if not path.is_file():
            if self.attestation_in_ledger:
                self.rep.warnings.append(
                    f"{ATTESTATION_NAME} is missing; the ledger's copy of the attestation verified"
                )
            elif want:
                raise _Fail(
                    0, "run.start", f"{ATTESTATION_NAME} is missing; run.start names {want}"
                )
            else:
                self.rep.warnings.append("no attestation: run.start names none")
            return
        try:
            env = json.loads(path.read_bytes())
        except ValueError as exc:
            raise _Fail(None, ATTESTATION_NAME, str(exc)) from exc
        payload = self._attestation_payload(env, ATTESTATION_NAME, None)
        got = digest(payload)
        if not want:
            self.rep.warnings.append(f"{ATTESTATION_NAME} is present but run.start names no digest")
        elif got != want:
            raise _Fail(
                0,
                "run.start",
                f"attestation digest mismatch: {ATTESTATION_NAME} has {got}, "
                f"run.start names {want}",
            )

    # ------------------------------------------------------------ the ledger itself
    def _scan(self, path: Path, want: set[int]) -> dict[int, bytes]:
        roots: dict[int, bytes] = {}
        if 0 in want:
            roots[0] = self.tree.root()
        try:
            self._scan_lines(path, want, roots)
        finally:
            self.rep.records = self._n
        return roots

    def _scan_lines(self, path: Path, want: set[int], roots: dict[int, bytes]) -> None:
        # The hot loop: keep it lean (one orjson parse of the bytes, one SHA-256,
        # the compact-range append inlined). Semantic handlers run only for the kinds
        # that need them.
        tree = self.tree
        stack = tree._hashes
        loads = orjson.loads
        handlers = self._handlers()
        n = 0
        prev = ZERO_HASH
        try:
            with path.open("rb") as f:
                for line in f:
                    if line[-1:] != b"\n":
                        self._torn(line, "has no final newline")
                        break
                    body = line[:-1]
                    try:
                        rec = loads(body)
                    except ValueError as exc:
                        if f.read(1) == b"":
                            self._torn(line, "does not parse")
                            break
                        raise _Fail(n, None, f"not a JSON record: {exc!r}") from exc
                    if type(rec) is not dict:
                        raise _Fail(n, None, "not a JSON object")
                    kind = rec.get("kind")
                    if type(kind) is not str:
                        raise _Fail(n, None, "field 'kind' is missing or not a string")
                    i = rec.get("i")
                    if type(i) is not int or i != n:
                        raise _Fail(n, kind, f"index out of order: expected i={n}, found {i!r}")
                    if rec.get("prev") != prev:
                        raise _Fail(n, kind, _chain_problem(n))
                    if type(rec.get("t")) is not int:
                        raise _Fail(n, kind, "field 't' is missing or not an integer")
                    if n == 0:
                        if kind != "run.start":
                            raise _Fail(0, kind, "the first record must be run.start")
                    elif self.run_end is not None and kind != "checkpoint":
                        raise _Fail(n, kind, f"record after run.end (record {self.run_end})")
                    handler = handlers.get(kind)
                    if handler is not None:
                        handler(rec, n)
                    h = sha256(b"\x00" + body).digest()
                    prev = h.hex()
                    # CompactTree.append, inlined.
                    size = n
                    while size & 1:
                        h = sha256(b"\x01" + stack.pop() + h).digest()
                        size >>= 1
                    stack.append(h)
                    n += 1
                    if n in want:
                        roots[n] = tree.root()
        finally:
            self._n = tree._size = n

    def _torn(self, line: bytes, why: str) -> None:
        self.rep.torn_tail = True
        self.rep.torn_bytes = len(line)
        self.rep.warnings.append(
            f"torn tail: the final line ({len(line)} bytes) {why}; a write cut short by a "
            "crash — reported, not accepted"
        )

    def _handlers(self) -> dict[str, Any]:
        return {
            "run.start": self._run_start,
            "lease.issued": self._lease_issued,
            "lease.renewed": self._lease_renewed,
            "lease.revoked": self._lease_revoked,
            "decision": self._decision,
            "attestation": self._attestation_record,
            "approval.granted": self._approval_granted,
            "approval.denied": self._approval_denied,
            "step.start": self._step_start,
            "checkpoint": self._checkpoint,
            "run.end": self._run_end,
        }

    # ------------------------------------------------------------ per-kind checks
    @staticmethod
    def _str(rec: dict[str, Any], name: str, n: int) -> str:
        v = rec.get(name)
        if type(v) is not str:
            raise _Fail(n, rec["kind"], f"field {name!r} is missing or not a string ({v!r})")
        return v

    @staticmethod
    def _int(rec: dict[str, Any], name: str, n: int) -> int:
        v = rec.get(name)
        if type(v) is not int:
            raise _Fail(n, rec["kind"], f"field {name!r} is missing or not an integer ({v!r})")
        return v

    def _run_start(self, rec: dict[str, Any], n: int) -> None:
        if n != 0:
            raise _Fail(n, "run.start", "run.start may only be the first record")
        run = self._str(rec, "run", n)
        if run != self.run_id:
            raise _Fail(0, "run.start", f"run id {run!r} is not a valid run id")
        pub = self._str(rec, "pubkey", n)
        try:
            raw = base64.b64decode(pub, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise _Fail(0, "run.start", "field 'pubkey' is not base64") from exc
        if raw != self.key_raw:
            raise _Fail(
                0,
                "run.start",
                f"run.start names public key {pub}, not the trusted key "
                f"{base64.b64encode(self.key_raw).decode()}",
            )
        deadline = rec.get("deadline")
        self.deadline = deadline if type(deadline) is int else None
        att = rec.get("attestation")
        self.attestation = att if isinstance(att, str) and att else None

    def _claims(self, rec: dict[str, Any], n: int) -> dict[str, Any]:
        kind = rec["kind"]
        try:
            payload = verify_envelope(rec.get("envelope"), self.key, LEASE_PAYLOAD_TYPE)
            claims = json.loads(payload)
        except ValueError as exc:
            raise _Fail(n, kind, f"lease envelope: {exc}") from exc
        if not isinstance(claims, dict):
            raise _Fail(n, kind, "lease envelope payload is not a JSON object")
        lid = self._str(rec, "lease", n)
        if claims.get("lid") != lid:
            raise _Fail(
                n, kind, f"lease envelope is for {claims.get('lid')!r}, record names {lid!r}"
            )
        if claims.get("run") != self.run_id:
            raise _Fail(
                n, kind, f"lease {lid} is for run {claims.get('run')!r}, not {self.run_id!r}"
            )
        exp = claims.get("exp")
        if type(exp) is not int or exp != rec.get("exp"):
            raise _Fail(
                n, kind, f"lease {lid}: signed exp {exp!r} != recorded exp {rec.get('exp')!r}"
            )
        if self.deadline is not None and exp > self.deadline:
            raise _Fail(
                n, kind, f"lease {lid} expires at {exp}, after the run deadline {self.deadline}"
            )
        return claims

    def _lease_issued(self, rec: dict[str, Any], n: int) -> None:
        claims = self._claims(rec, n)
        lid: str = claims["lid"]
        if lid in self.leases:
            raise _Fail(n, "lease.issued", f"lease {lid} was already issued")
        parent = claims["parent_lid"] if "parent_lid" in claims else claims.get("parent")
        if parent is not None and type(parent) is not str:
            raise _Fail(n, "lease.issued", f"lease {lid}: parent {parent!r} is not a lease id")
        if (parent or "") != rec.get("parent", parent or ""):
            raise _Fail(
                n, "lease.issued", f"lease {lid}: record parent differs from the signed one"
            )
        scopes_v = claims.get("scopes")
        if not isinstance(scopes_v, list) or not all(type(s) is str for s in scopes_v):
            raise _Fail(n, "lease.issued", f"lease {lid}: scopes must be a list of strings")
        scopes = frozenset(scopes_v)
        if parent:
            p = self.leases.get(parent)
            if p is None:
                raise _Fail(
                    n, "lease.issued", f"lease {lid}: parent lease {parent} was never issued"
                )
            if not scopes <= p.scopes:
                raise _Fail(
                    n,
                    "lease.issued",
                    f"lease {lid} widens its parent {parent}: {sorted(scopes - p.scopes)}",
                )
        self.leases[lid] = _Lease(claims["exp"], parent or None, scopes)

    def _lease_renewed(self, rec: dict[str, Any], n: int) -> None:
        claims = self._claims(rec, n)
        lease = self.leases.get(claims["lid"])
        if lease is None:
            raise _Fail(n, "lease.renewed", f"lease {claims['lid']} was never issued")
        lease.exp = claims["exp"]

    def _lease_revoked(self, rec: dict[str, Any], n: int) -> None:
        ids = [self._str(rec, "lease", n)]
        cascade = rec.get("cascade", [])
        if isinstance(cascade, list):
            ids.extend(c for c in cascade if type(c) is str)
        for lid in ids:
            lease = self.leases.get(lid)
            if lease is not None and lease.revoked_at is None:
                lease.revoked_at = n

    def _decision(self, rec: dict[str, Any], n: int) -> None:
        effect = rec.get("effect")
        if effect == "allow" or effect == "require_approval":
            get = rec.get
            self.decisions[n] = (get("step"), get("lease"), get("action"), get("target"), effect)

    def _approval_granted(self, rec: dict[str, Any], n: int) -> None:
        try:
            verify_envelope(rec.get("envelope"), self.key, APPROVAL_PAYLOAD_TYPE)
        except ValueError as exc:
            raise _Fail(n, rec["kind"], f"approval envelope: {exc}") from exc
        self.approvals[n] = self._str(rec, "step", n)

    def _approval_denied(self, rec: dict[str, Any], n: int) -> None:
        try:
            verify_envelope(rec.get("envelope"), self.key, APPROVAL_PAYLOAD_TYPE)
        except ValueError as exc:
            raise _Fail(n, rec["kind"], f"approval envelope: {exc}") from exc

    def _step_start(self, rec: dict[str, Any], n: int) -> None:
        get = rec.get
        step, lid, action, target = get("step"), get("lease"), get("action"), get("target")
        d = get("decision")
        dec = self.decisions.pop(d, None) if type(d) is int else None
        if dec is None:
            raise _Fail(
                n,
                "step.start",
                f"step {step!r} has no allowing decision: record {d!r} is not an earlier, "
                "unused decision with effect allow or require_approval",
            )
        # A tool runs under the lease its decision was taken under; an agent runs under a
        # new lease whose parent is the delegating lease the decision names ("" = root).
        lease = self.leases.get(lid) if type(lid) is str else None
        if action == "invoke_agent":
            decided_under = (lease.parent or "") if lease is not None else None
        else:
            decided_under = lid
        if dec[:4] != (step, decided_under, action, target):
            raise _Fail(
                n,
                "step.start",
                f"decision {d} is for step/lease/action/target {list(dec[:4])}, "
                f"not {[step, decided_under, action, target]}",
            )
        if dec[4] == "require_approval":
            a = get("approval")
            if type(a) is not int or self.approvals.pop(a, None) != step:
                raise _Fail(
                    n,
                    "step.start",
                    f"step {step!r} needed approval (decision {d}) but record {a!r} is not an "
                    "earlier, unused approval.granted for it",
                )
        if lease is None:
            raise _Fail(n, "step.start", f"lease {lid!r} was never issued in this ledger")
        cur: _Lease | None = lease
        name = lid
        while cur is not None:
            if cur.revoked_at is not None:
                raise _Fail(
                    n,
                    "step.start",
                    f"step {step!r} ran under lease {lid} after lease {name} was revoked "
                    f"(record {cur.revoked_at})",
                )
            name = cur.parent
            cur = self.leases.get(name) if name is not None else None
        t = rec["t"]
        if t > lease.exp + CLOCK_SKEW_US:
            raise _Fail(
                n,
                "step.start",
                f"step {step!r} started at {t} under lease {lid}, which expired at {lease.exp} "
                f"(tolerance {CLOCK_SKEW_US} µs)",
            )

    def _checkpoint(self, rec: dict[str, Any], n: int) -> None:
        if n == 0:
            raise _Fail(0, "checkpoint", "the first record must be run.start")
        size = self._int(rec, "size", n)
        if size != n:
            raise _Fail(n, "checkpoint", f"checkpoint size {size} must equal its index {n}")
        root = self.tree.root()
        if rec.get("root") != root.hex():
            raise _Fail(
                n,
                "checkpoint",
                f"checkpoint root does not match records 0..{n - 1}: a record among "
                f"{self.last_cp_size}..{n - 1} was altered, inserted or removed",
            )
        try:
            cp = open_checkpoint(self._str(rec, "note", n), self.origin, self.key)
        except NoteError as exc:
            raise _Fail(n, "checkpoint", f"checkpoint note: {exc}") from exc
        if cp.size != size or cp.root != root:
            raise _Fail(n, "checkpoint", "checkpoint note does not sign the recorded size and root")
        self.last_cp_size = n
        self.rep.checkpoints += 1

    def _run_end(self, rec: dict[str, Any], n: int) -> None:
        status = self._str(rec, "status", n)
        if status not in _RUN_END_STATUSES:
            raise _Fail(
                n, "run.end", f"status {status!r} is not one of {sorted(_RUN_END_STATUSES)}"
            )
        self.run_end = n
        self.rep.run_status = status


def _resolve_key(
    rep: VerifyReport, run_dir: Path, public_key: Ed25519PublicKey | None
) -> Ed25519PublicKey | None:
    copy = run_dir / PUBLIC_KEY_NAME
    if public_key is not None:
        rep.key_source = "given"
        if copy.is_file():
            try:
                if _raw(load_public_key(copy)) != _raw(public_key):
                    rep.warnings.append(f"{copy} differs from the given key (ignored)")
            except ValueError:
                rep.warnings.append(f"{copy} is not a valid public key (ignored)")
        return public_key
    if not copy.is_file():
        return None
    try:
        key = load_public_key(copy)
    except ValueError as exc:
        raise _Fail(None, PUBLIC_KEY_NAME, str(exc)) from exc
    rep.key_source = "run-directory copy"
    rep.warnings.append(
        f"trusted only {copy}, the key copy inside the run directory: whoever can rewrite "
        "the evidence can replace it too; pass the runtime's public key (--key) to verify"
    )
    return key


def verify_run(
    run_dir: Path,
    public_key: Ed25519PublicKey | None = None,
    *,
    witness_dir: Path | None = None,
) -> VerifyReport:
    """Verify the evidence in ``run_dir`` (see the module docstring for every check).

    Raises ``FileNotFoundError`` if ``run_dir`` is not a directory; every problem with
    its content is reported in the returned :class:`VerifyReport` (``ok`` False).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: not a run directory")
    rep = VerifyReport(run_dir=str(run_dir))
    try:
        key = _resolve_key(rep, run_dir, public_key)
        if key is None:
            raise _Fail(
                None,
                PUBLIC_KEY_NAME,
                f"no public key: none given and {run_dir / PUBLIC_KEY_NAME} is missing",
            )
        rep.key_id = key_id_of(key)
        wdir = witness_dir if witness_dir is not None else run_dir.parent / ".witness"
        _Verifier(rep, run_dir, key, wdir).run()
    except _Fail as fail:
        rep.ok = False
        rep.first_bad_index = fail.index
        rep.first_bad_kind = fail.kind
        rep.problem = fail.problem
        return rep
    except OSError as exc:
        rep.ok = False
        rep.problem = f"cannot read the evidence: {exc}"
        return rep
    rep.ok = True
    return rep
