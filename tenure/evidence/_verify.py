"""Offline verification of a run directory: signatures, chain, Merkle roots, binding, semantics.

A third party needs only the run directory (or an audit bundle) and the runtime's public
key. The ledger is streamed once through the one reader (:mod:`._reader`: bounded reads, one
torn-tail rule), memory O(log n) for the tree plus the live leases and pending decisions;
the verifier stops at the first bad record and reports it as a coded
:class:`~._report_model.Finding`. The semantic checks of each record kind live in
:mod:`._semantics`.

What is checked, and the decisions taken where the format leaves room:

- **Binding**: the evidence must be the run's that was asked about: the ``run`` of
  ``run.start`` must equal ``expect_run_id`` when given, else the directory's name (a run
  directory is always ``<evidence_dir>/<run_id>``). A copy of run A's evidence put in
  place of run B's is ``run.binding``, whatever else verifies.
- **Lines**: see :mod:`._reader`; a torn tail is reported (``ledger.torn_tail``), never
  accepted, and the run is then at best ``incomplete``.
- **Chain**: ``i`` equals the line number, ``prev`` the hex leaf hash of the previous line
  (64 zeros first).
- **Checkpoints**: every ``checkpoint`` record has ``size == i``, ``root`` equal to the
  RFC 9162 root of records ``0..size-1`` and a C2SP note with the same size and root signed
  by the trusted key under ``tenure.local/<run_id>``. The ``checkpoint`` file must verify
  the same way, match the first ``size`` records, and the ledger must hold them all.
- **Witness** (``witness_dir``, default ``<run_dir>/../.witness``; in a bundle its
  ``witness.checkpoint``): larger than the run directory's checkpoint is a rollback; the
  same size with another root a split view; smaller must match the ledger at its size.
  A missing witness is a warning.
- **Completeness**: ``verified`` needs a ``run.end`` covered by a signed checkpoint. A
  ``run.end`` among unsigned records is a failure (a closed ledger always ends under a
  checkpoint, and unsigned records could be rewritten by anyone); no ``run.end`` at all, or
  a torn tail, is ``incomplete``. A final ``checkpoint`` record signs every record before
  it: a ledger whose checkpoint file (and witness) repeat that last note is fully signed
  (the close of runtimes since the batch format: one signature), as is one whose file
  covers the checkpoint record too (older runtimes signed twice at close).
"""

from __future__ import annotations

from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ..crypto import key_id_of, record_bytes
from ._fail import Fail
from ._format import (
    CHECKPOINT,
    CHECKPOINT_NAME,
    DECISION,
    LEDGER_NAME,
    RUN_START,
    STEP_END,
    STEP_START,
    WITNESS_DIR,
    ZERO_HASH,
    field_problem,
    valid_run_id,
    witness_path,
)
from ._note import Checkpoint, NoteError, open_checkpoint, origin_for, verifier_key
from ._reader import LedgerReader, LedgerReadError, read_evidence_file
from ._report_model import Finding, VerifyReport
from ._semantics import Semantics
from ._trust import coerce_key, resolve_key

__all__ = ["verify_run"]

# Two thirds of a ledger: their fields are compared, never used as keys, iterated or parsed,
# so the per-field type check (``field_problem``) is skipped for them on the hot path.
_HOT_KINDS = frozenset({DECISION, STEP_START, STEP_END})


def _chain_problem(n: int) -> str:
    if n == 0:
        return "hash chain broken: the first record's 'prev' must be 64 zeros"
    return (
        f"hash chain broken: 'prev' does not match the hash of record {n - 1} (that record "
        "or this field was altered, or records were removed or reordered)"
    )


def _read_optional(path: Path, what: str) -> bytes | None:
    try:
        return read_evidence_file(path)
    except FileNotFoundError:
        return None
    except LedgerReadError as exc:
        raise Fail("evidence.unreadable", None, what, str(exc)) from exc
    except OSError as exc:
        raise Fail("evidence.unreadable", None, what, f"{path}: {exc.strerror or exc}") from exc


def _first_run_id(path: Path) -> object:
    """The ``run`` of the first record, unverified (only to find the witness and origin)."""
    try:
        for _, _, rec in LedgerReader(path):
            return rec.get("run")
    except (LedgerReadError, OSError):
        return None
    return None


def _claimed_size(note: bytes | None) -> int | None:
    """The size a checkpoint note claims, unverified (only used to capture a root)."""
    if note is None:
        return None
    lines = note.split(b"\n", 2)
    if len(lines) < 3 or not lines[1].isdigit() or len(lines[1]) > 19:
        return None
    return int(lines[1])


@dataclass(frozen=True, slots=True)
class _Witness:
    """Where the witness copy is: a witness directory, or one file (in a bundle)."""

    location: Path
    source: str
    is_file: bool = False

    def path(self, run_id: str) -> Path:
        return self.location if self.is_file else witness_path(self.location, run_id)


class _Verifier:
    """One pass over a run directory; raises :class:`Fail` at the first problem."""

    def __init__(
        self,
        rep: VerifyReport,
        run_dir: Path,
        key: Ed25519PublicKey,
        witness: _Witness | None,
        expect_run_id: str,
    ) -> None:
        self.rep = rep
        self.run_dir = run_dir
        self.key = key
        self.witness = witness
        self.expect = expect_run_id
        self.origin = ""
        # The last record read: its bytes, the record, and the ``t`` of the one before it.
        self.tail: tuple[bytes, dict[str, Any], int] | None = None

    def _open_cp(self, what: str, data: bytes) -> Checkpoint:
        try:
            return open_checkpoint(data, self.origin, self.key)
        except NoteError as exc:
            raise Fail(
                "checkpoint.signature", None, what, f"{exc} (origin {self.origin!r})"
            ) from exc

    def run(self) -> None:
        rep, run_dir = self.rep, self.run_dir
        ledger = run_dir / LEDGER_NAME
        if not ledger.exists():
            raise Fail("evidence.missing", None, LEDGER_NAME, f"{ledger} is missing")
        claimed = _first_run_id(ledger)
        run_id = claimed if isinstance(claimed, str) and valid_run_id(claimed) else self.expect
        if run_id != self.expect:
            raise Fail(
                "run.binding",
                0,
                RUN_START,
                f"the evidence in {run_dir} is run {run_id!r}'s, not run {self.expect!r}'s "
                "(the directory name, or --expect-run-id, names the run being verified)",
            )
        self.origin = origin_for(run_id)
        rep.run_id = run_id
        rep.verifier_key = verifier_key(self.origin, self.key)
        sem = Semantics(rep, self.key, run_id)

        cp_data = _read_optional(run_dir / CHECKPOINT_NAME, "checkpoint file")
        wpath = self.witness.path(run_id) if self.witness is not None else None
        w_data = _read_optional(wpath, "witness checkpoint") if wpath is not None else None
        want = {s for s in map(_claimed_size, (cp_data, w_data)) if s is not None}
        roots = self._scan(ledger, want, sem)
        n = rep.records

        cp = self._open_cp("checkpoint file", cp_data) if cp_data is not None else None
        if cp is None:
            rep.warnings.append(
                Finding(
                    "checkpoint.file_missing",
                    f"no checkpoint file in {run_dir}: no record is signed by it",
                )
            )
        wcp: Checkpoint | None = None
        if w_data is not None and self.witness is not None:
            wcp = self._open_cp("witness checkpoint", w_data)
            rep.witness_size = wcp.size
            rep.witness_source = self.witness.source
            if cp is None or wcp.size > cp.size:
                have = "none" if cp is None else f"size {cp.size}"
                raise Fail(
                    "witness.rollback",
                    None,
                    "witness checkpoint",
                    f"rollback: the witness {wpath} holds a checkpoint of size {wcp.size}, "
                    f"the run directory {have}",
                )
            if wcp.size == cp.size and wcp.root != cp.root:
                raise Fail(
                    "witness.split_view",
                    None,
                    "witness checkpoint",
                    f"split view: witness and run directory checkpoints of size {cp.size} "
                    "have different roots",
                )
        else:
            rep.warnings.append(
                Finding(
                    "witness.missing",
                    f"no witness checkpoint at {wpath}: a rollback of the whole run "
                    "directory to an older prefix cannot be detected",
                )
            )

        for what, c in (("checkpoint file", cp), ("witness checkpoint", wcp)):
            if c is None:
                continue
            if n < c.size:
                raise Fail(
                    "ledger.truncated",
                    n,
                    None,
                    f"ledger truncated: the signed {what} covers {c.size} records, only {n} remain",
                )
            if roots[c.size] != c.root:
                lo = min(sem.last_cp_size, c.size - 1)
                raise Fail(
                    "checkpoint.root",
                    lo,
                    None,
                    f"the {what} (size {c.size}) does not match records 0..{c.size - 1}: "
                    f"a record among {lo}..{c.size - 1} was altered, inserted or removed",
                )
        if cp is not None and cp.size >= sem.last_cp_size:
            rep.tree_size, rep.root = cp.size, cp.root.hex()
        else:
            rep.tree_size, rep.root = sem.last_cp_size, sem.last_cp_root
        signed = rep.tree_size
        if rep.torn_tail and sem.run_end is not None and signed > sem.run_end:
            # A closed ledger's checkpoint file is published only once its last record is
            # durable: a torn line after a signed run.end is no crash, it was cut later.
            raise Fail(
                "run.after_end",
                n,
                None,
                f"a torn record follows run.end (record {sem.run_end}), which a signed "
                "checkpoint covers: a closed ledger ends with a complete checkpoint record",
            )
        if signed == n - 1 and sem.last_cp_size == signed:
            # The last record is the checkpoint of everything before it (its note verified
            # above): a ledger closed with one final signature, which the checkpoint file
            # and the witness repeat. It is signed only if every byte of it is fixed by what
            # it signs.
            self._closing_checkpoint(n - 1)
            signed = n
        if signed < n:
            if sem.run_end is not None and sem.run_end >= signed:
                raise Fail(
                    "run.end",
                    sem.run_end,
                    "run.end",
                    f"run.end is not covered by a signed checkpoint (signed records: {signed}); "
                    "a closed ledger always ends under one",
                )
            rep.warnings.append(
                Finding(
                    "ledger.unsigned_tail",
                    f"unsigned tail: records {signed}..{n - 1} are not covered by a signed "
                    "checkpoint (the run did not close cleanly)",
                )
            )
        if sem.run_end is None:
            rep.warnings.append(
                Finding("run.no_end", "the run has no run.end record: it did not finish")
            )
        sem.check_attestation_file(run_dir)

    def _closing_checkpoint(self, n: int) -> None:
        """The last record ``n``, a checkpoint no signature covers, must be exactly the
        canonical record of its note: empty trace and span, the time of record ``n - 1``."""
        assert self.tail is not None
        body, rec, before_t = self.tail
        expected = {
            "i": n,
            "t": before_t,
            "kind": CHECKPOINT,
            "prev": rec.get("prev"),
            "trace": "",
            "span": "",
            "size": n,
            "root": rec.get("root"),
            "note": rec.get("note"),
        }
        if body != record_bytes(expected):
            raise Fail(
                "checkpoint.record",
                n,
                CHECKPOINT,
                "the closing checkpoint is not the canonical record of its note (a field was "
                "added or changed, or its time is not that of the record it follows)",
            )

    def _scan(self, path: Path, want: set[int], sem: Semantics) -> dict[int, bytes]:
        # The hot loop: one parse (in the reader), one SHA-256, the compact-range append
        # inlined. Semantic handlers run only for the kinds that need them.
        roots: dict[int, bytes] = {}
        tree = sem.tree
        if 0 in want:
            roots[0] = tree.root()
        stack = tree._hashes
        handlers = sem.handlers
        prev = ZERO_HASH
        tail: dict[str, Any] | None = None
        before_t = last_t = 0
        reader = LedgerReader(path, check_fields=False)
        n = 0
        try:
            for n, body, rec in reader:
                kind = rec["kind"]
                if rec.get("i") != n:
                    raise Fail(
                        "chain.index",
                        n,
                        kind,
                        f"index out of order: expected i={n}, found {rec.get('i')!r}",
                    )
                if rec.get("prev") != prev:
                    raise Fail("chain.prev", n, kind, _chain_problem(n))
                if type(rec.get("t")) is not int:
                    raise Fail("record.field", n, kind, "field 't' is missing or not an integer")
                if kind not in _HOT_KINDS:
                    bad = field_problem(rec)
                    if bad is not None:
                        raise Fail("record.field", n, kind, f"field {bad[0]!r}: expected {bad[1]}")
                if n == 0:
                    if kind != RUN_START:
                        raise Fail("run.start", 0, kind, "the first record must be run.start")
                elif sem.run_end is not None and kind != CHECKPOINT:
                    raise Fail(
                        "run.after_end", n, kind, f"record after run.end (record {sem.run_end})"
                    )
                handler = handlers.get(kind)
                if handler is not None:
                    handler(rec, n)
                tail, before_t, last_t = rec, last_t, rec["t"]
                h = sha256(b"\x00" + body).digest()
                prev = h.hex()
                size = n
                while size & 1:
                    h = sha256(b"\x01" + stack.pop() + h).digest()
                    size >>= 1
                stack.append(h)
                tree._size = n + 1
                if n + 1 in want:
                    roots[n + 1] = tree.root()
        except LedgerReadError as exc:
            code = "record.field" if exc.field else "record.malformed"
            if "longer than" in exc.reason or "regular file" in exc.reason:
                code = "evidence.too_large" if "longer" in exc.reason else "evidence.unreadable"
            raise Fail(code, max(exc.line - 1, 0), None, str(exc)) from exc
        finally:
            self.rep.records = reader.count
        if tail is not None:
            self.tail = (body, tail, before_t)
        torn = reader.torn
        if torn is not None:
            self.rep.torn_tail = True
            self.rep.torn_bytes = torn.size
            self.rep.warnings.append(
                Finding(
                    "ledger.torn_tail",
                    f"torn tail: the final line ({torn.size} bytes) {torn.why}; a write cut "
                    "short by a crash — reported, not accepted",
                    torn.line - 1,
                )
            )
        return roots


def verify_run(
    path: Path | str,
    key: Ed25519PublicKey | Path | str | None = None,
    *,
    witness_dir: Path | None = None,
    expect_run_id: str | None = None,
) -> VerifyReport:
    """Verify the evidence of one run (see the module docstring for every check).

    Args:
        path: a run directory (``evidence_dir/<run_id>``) or an audit bundle made by
            ``tenure export`` (a directory or a ``.tar.gz``).
        key: the runtime's public key (an ``Ed25519PublicKey`` or a PEM file). Without one
            the copy shipped with the evidence is trusted, with a ``key.run_copy`` warning.
        witness_dir: where witness checkpoints live (default ``<path>/../.witness``; a
            bundle carries its own).
        expect_run_id: the run the evidence must belong to (default: the directory name).

    Raises ``FileNotFoundError`` if ``path`` does not exist; every problem with its content
    is a failure in the returned :class:`VerifyReport`.
    """
    from ._bundle import open_bundle

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such run directory or bundle")
    with open_bundle(path) as bundle:
        run_dir = bundle.run_dir if bundle is not None else path
        rep = VerifyReport(run_dir=str(path))
        try:
            if bundle is not None:
                bundle.check(expect_run_id)
            if not run_dir.is_dir():
                raise Fail("evidence.missing", None, None, f"{run_dir}: not a run directory")
            if not (run_dir / LEDGER_NAME).exists():
                raise Fail(
                    "evidence.missing", None, LEDGER_NAME, f"{run_dir / LEDGER_NAME} is missing"
                )
            given = coerce_key(key)
            trusted = resolve_key(
                rep, run_dir, given, bundle.public_key if bundle is not None else None
            )
            rep.key_id = key_id_of(trusted)
            witness: _Witness | None
            if bundle is not None:
                witness = (
                    _Witness(bundle.witness, "bundle", is_file=True)
                    if bundle.witness is not None
                    else None
                )
                expected = bundle.run_id
            else:
                wdir = witness_dir if witness_dir is not None else run_dir.parent / WITNESS_DIR
                witness = _Witness(wdir, "evidence directory")
                expected = run_dir.resolve().name
            _Verifier(rep, run_dir, trusted, witness, expect_run_id or expected).run()
        except Fail as fail:
            rep.failures.append(fail.finding())
            rep.verdict = "invalid"
            return rep
        except OSError as exc:
            rep.failures.append(Finding("evidence.unreadable", f"cannot read the evidence: {exc}"))
            rep.verdict = "invalid"
            return rep
    complete = rep.run_status != "incomplete" and not rep.torn_tail
    rep.verdict = "verified" if complete else "incomplete"
    return rep
