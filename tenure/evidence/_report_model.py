"""What :func:`~tenure.evidence.verify_run` returns: a verdict, the facts, coded findings.

A :class:`VerifyReport` says one of three things (:attr:`VerifyReport.verdict`):

- ``"verified"``: every check passed and a signed checkpoint covers the run's ``run.end``;
- ``"incomplete"``: nothing failed, but the evidence does not reach a signed ``run.end``
  (the run crashed, is still running, or its tail was cut off): what is there verifies,
  what is missing cannot be vouched for;
- ``"invalid"``: a check failed; :attr:`VerifyReport.failures` holds it (the first bad
  record, named by index and kind).

Every failure and warning is a :class:`Finding` with a stable ``code`` (listed in
:data:`CODES`: tests, scripts and the report key on codes, never on the prose) and a message
for a person.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Final, Literal

from .._util import final

__all__ = ["CODES", "Finding", "Verdict", "VerifyReport"]

Verdict = Literal["verified", "incomplete", "invalid"]

#: Every code a finding may carry, with what it means.
CODES: Final = {
    # failures
    "evidence.missing": "the run directory has no ledger.jsonl (or is not a run directory)",
    "evidence.unreadable": "an evidence file cannot be read (I/O error, not a regular file)",
    "evidence.too_large": "an evidence file or record exceeds its size limit",
    "record.malformed": "a ledger line is not a JSON object with a string kind",
    "record.field": "a declared field is missing or has the wrong type",
    "chain.index": "a record's i is not its line number",
    "chain.prev": "a record's prev is not the hash of the record before it",
    "run.start": "the first record is not a valid run.start",
    "run.binding": "the evidence belongs to another run than the one asked about",
    "run.after_end": "a record other than a checkpoint follows run.end",
    "run.end": "run.end is malformed or not covered by a signed checkpoint",
    "key.missing": "no public key was given and the run directory has no copy",
    "key.invalid": "a public key file is not an Ed25519 PEM key",
    "key.mismatch": "run.start names another public key than the trusted one",
    "checkpoint.record": "a checkpoint record's size, root or note is wrong",
    "checkpoint.signature": "a checkpoint note does not verify under the trusted key",
    "checkpoint.root": "a signed checkpoint does not match the records it covers",
    "ledger.truncated": "a signed checkpoint covers more records than the ledger holds",
    "witness.rollback": "the witness holds a larger checkpoint than the run directory",
    "witness.split_view": "witness and run directory sign different roots for one size",
    "lease.envelope": "a lease envelope does not verify or does not match its record",
    "lease.batch": "a lease batch's envelope does not verify, or its record is malformed",
    "lease.unsigned": "a lease in a batch record is not one of the digests the batch signed",
    "lease.duplicate": "a lease id was issued twice",
    "lease.parent": "a lease names a parent never issued, or differs from the signed one",
    "lease.widens": "a child lease holds scopes its parent does not",
    "lease.deadline": "a lease expires after the run's deadline",
    "approval.envelope": "an approval answer does not verify (signature, approver key, action)",
    "approval.request": "an approval request is malformed (action digest, approver keys)",
    "step.decision": "a step started without an earlier, matching allowing decision",
    "step.approval": "a step needing approval started without a matching grant",
    "step.lease": "a step ran under a lease never issued in this ledger",
    "step.revoked": "a step ran under a revoked lease (or a revoked ancestor)",
    "step.expired": "a step started after its lease expired",
    "attestation.envelope": "the attestation envelope does not verify",
    "attestation.digest": "the attestation does not match the digest run.start names",
    "attestation.missing": "run.start names an attestation that is not there",
    "bundle.manifest": "an audit bundle's manifest is missing, malformed or does not match",
    # warnings
    "key.run_copy": "only the key copy inside the run directory (or bundle) was trusted",
    "key.copy_differs": "the run directory's key copy differs from the given key",
    "checkpoint.file_missing": "the run directory has no checkpoint file",
    "witness.missing": "no witness checkpoint: a rollback of the whole directory is invisible",
    "ledger.torn_tail": "the final line was cut short by a crash (reported, not accepted)",
    "ledger.unsigned_tail": "records after the last signed checkpoint",
    "run.no_end": "the run has no run.end record",
    "attestation.file_missing": "attestation.intoto.json is missing (the ledger copy verified)",
    "attestation.none": "the run names no attestation",
}


@final
@dataclass(frozen=True, slots=True)
class Finding:
    """One failed check or warning: a stable :data:`CODES` code and a message.

    ``index``/``kind`` name the record concerned, when there is one.
    """

    code: str
    message: str
    index: int | None = None
    kind: str | None = None

    def line(self) -> str:
        """One line: ``record <i> (<kind>): <message>`` or ``<kind or file>: <message>``."""
        if self.index is None:
            return f"{self.kind or 'run directory'}: {self.message}"
        return f"record {self.index} ({self.kind or '?'}): {self.message}"

    def __str__(self) -> str:
        return self.message


@final
@dataclass
class VerifyReport:
    """The outcome of :func:`~tenure.evidence.verify_run`.

    Attributes:
        run_dir: the directory verified.
        verdict: ``"verified"``, ``"incomplete"`` or ``"invalid"`` (see the module doc).
        run_id: the run the evidence belongs to (from its ``run.start``).
        key_id: Tenure's id of the trusted key; ``key_source`` how it was obtained
            (``"given"``, ``"run-directory copy"``, ``"bundle copy"``).
        verifier_key: the checkpoint key as a C2SP verifier string
            (``tenure.local/<run>+<keyid>+<base64>``), usable by any signed-note verifier.
        records / checkpoints: records and checkpoint records read.
        tree_size / root: the size and hex RFC 9162 root of the largest signed checkpoint.
        witness_size / witness_source: the witness checkpoint's size, and where it was
            found (``"evidence directory"``, ``"bundle"``), if one was.
        run_status: ``run.end``'s status, or ``"incomplete"`` without one.
        failures / warnings: coded :class:`Finding` lists.
    """

    run_dir: str
    verdict: Verdict = "invalid"
    run_id: str | None = None
    key_source: str | None = None
    key_id: str | None = None
    verifier_key: str | None = None
    records: int = 0
    checkpoints: int = 0
    tree_size: int = 0
    root: str | None = None
    witness_size: int | None = None
    witness_source: str | None = None
    torn_tail: bool = False
    torn_bytes: int = 0
    run_status: str = "incomplete"
    failures: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True only for ``verdict == "verified"``."""
        return self.verdict == "verified"

    @property
    def signed_size(self) -> int:
        """Records covered by a signed checkpoint (same as :attr:`tree_size`)."""
        return self.tree_size

    @property
    def codes(self) -> list[str]:
        """The codes of every failure, then every warning."""
        return [f.code for f in self.failures] + [w.code for w in self.warnings]

    @property
    def problem(self) -> str | None:
        """The first failure's message (``None`` when nothing failed)."""
        return self.failures[0].message if self.failures else None

    @property
    def first_bad_index(self) -> int | None:
        """The index of the first bad record, if the first failure names one."""
        return self.failures[0].index if self.failures else None

    @property
    def first_bad_kind(self) -> str | None:
        """The kind (or file) of the first failure."""
        return self.failures[0].kind if self.failures else None

    def failure_line(self) -> str:
        """One line naming the first bad record and what failed (empty when none failed)."""
        return self.failures[0].line() if self.failures else ""

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-able data (``tenure verify --json``)."""
        data = asdict(self)
        data["ok"] = self.ok
        return data

    def to_json(self) -> str:
        """The report as a JSON document."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)
