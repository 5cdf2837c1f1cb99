"""The evidence format, declared once: run-directory file names, payload types, record kinds.

Every writer (kernel, services, isolation, ledger, attestation) and every reader (the ledger
reader, the verifier, the trace view, the report, ``tenure runs``, proofs, export) takes its
names from here, so the format has one definition a reviewer can read in a sitting.

A run directory ``<evidence_dir>/<run_id>/`` holds:

============================  ============================================================
``ledger.jsonl``              the records, one RFC 8785 JSON object per ``\\n``-terminated line
``checkpoint``                the latest C2SP signed checkpoint (origin ``tenure.local/<run_id>``)
``tenure.pub``                a copy of the signing key's public half (PEM)
``attestation.intoto.json``   the run's environment attestation (in-toto Statement in DSSE)
============================  ============================================================

and beside it, in the evidence directory, ``.witness/<run_id>.checkpoint`` (a copy of each
run's latest checkpoint, kept apart so rollback of a run directory shows) and
``.revocations/`` (kill-switch requests from other processes). An audit bundle
(``tenure export``) holds the run directory, its witness copy as ``witness.checkpoint`` and
a ``manifest.json``.

Every record has the common fields :data:`COMMON_FIELDS` (``i`` its line number, ``t``
microseconds since the epoch on the run's clock, ``kind``, ``prev`` the hex leaf hash of the
previous line, ``trace``/``span`` the OpenTelemetry ids of the span it belongs to) and the
fields its kind declares in :data:`RECORD_FIELDS`. A declared field, when present, must have
its declared JSON type (:func:`field_problem`); the readers report the file, line and field
of one that does not. Fields a kind does not declare are ignored by the readers (a newer
writer may add some), never trusted.

Older ledgers remain readable: fields added since version 0.1.0 are optional here and every
reader copes with their absence (see ``CHANGELOG.md``).

Two ways of writing the same facts coexist, and every reader accepts both (see
``CHANGELOG.md``, "Evidence format"):

- **Leases.** One ``lease.issued`` / ``lease.renewed`` record per lease, each carrying the
  lease's own DSSE envelope; or one ``lease.batch`` record per batch of leases issued (or
  renewed) together: one DSSE envelope (:data:`LEASE_BATCH_PAYLOAD_TYPE`, see
  :mod:`._batch`) signing the digests of their payloads, and the payloads themselves.
  Runtimes since the batch format write batches, and single envelopes only for leases that
  travel to another process (a delegation to a pool).
- **An allowed step's decision.** A ``decision`` record and a ``step.start`` naming it by
  index; or, for a step allowed outright (effect ``allow``, no approval), one ``step.start``
  that carries the decision itself (``caller``, ``effect``, ``rule``, ``reason``) with
  ``decision`` = ``-1``. A denial, and a decision that needs an approval, are always a
  ``decision`` record of their own.
- **Revocation.** ``lease.revoked`` names the revoked lease; its descendants are revoked
  with it, derived from the leases' parent links (older writers also listed them in
  ``cascade``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from ..crypto import PUBLIC_KEY_NAME

__all__ = [
    "APPROVAL_DENIED",
    "APPROVAL_GRANTED",
    "APPROVAL_PAYLOAD_TYPE",
    "APPROVAL_REQUESTED",
    "ATTESTATION",
    "ATTESTATION_NAME",
    "BUNDLE_MANIFEST_NAME",
    "BUNDLE_WITNESS_NAME",
    "CHECKPOINT",
    "CHECKPOINT_NAME",
    "COMMON_FIELDS",
    "DECISION",
    "DELEGATION_LOST",
    "DELEGATION_QUEUED",
    "DELEGATION_RETURNED",
    "INTOTO_PAYLOAD_TYPE",
    "INTOTO_STATEMENT_TYPE",
    "ISOLATION_KILLED",
    "ISOLATION_STALL",
    "LEASE_BATCH",
    "LEASE_BATCH_PAYLOAD_TYPE",
    "LEASE_BATCH_PURPOSES",
    "LEASE_ISSUED",
    "LEASE_PAYLOAD_TYPE",
    "LEASE_RENEWED",
    "LEASE_REVOKED",
    "LEDGER_NAME",
    "POLICY_RELOADED",
    "PUBLIC_KEY_NAME",
    "RECORD_FIELDS",
    "REQUIRED_FIELDS",
    "REVOCATIONS_DIR",
    "RUN_END",
    "RUN_END_STATUSES",
    "RUN_START",
    "SEGMENT_START",
    "STALL",
    "STEPS_STOPPED",
    "STEP_ABANDONED",
    "STEP_END",
    "STEP_START",
    "USAGE",
    "VIOLATION",
    "WITNESS_DIR",
    "ZERO_HASH",
    "budgets_record",
    "carries_decision",
    "field_problem",
    "valid_run_id",
    "witness_path",
]

# --- file names of a run directory and an evidence directory --------------------------------

LEDGER_NAME: Final = "ledger.jsonl"
CHECKPOINT_NAME: Final = "checkpoint"
ATTESTATION_NAME: Final = "attestation.intoto.json"
WITNESS_DIR: Final = ".witness"
REVOCATIONS_DIR: Final = ".revocations"
BUNDLE_MANIFEST_NAME: Final = "manifest.json"
BUNDLE_WITNESS_NAME: Final = "witness.checkpoint"


_RUN_ID_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def valid_run_id(run_id: object) -> bool:
    """A run id usable as a directory name and a note key name: ``[A-Za-z0-9._-]{1,128}``."""
    return (
        isinstance(run_id, str)
        and 0 < len(run_id) <= 128
        and set(run_id) <= _RUN_ID_OK
        and run_id not in {".", ".."}
    )


def budgets_record(budgets: Mapping[str, Any]) -> dict[str, int | str]:
    """The ``budgets`` field of ``run.start``: the limits that are set, floats as strings
    (the ledger holds no JSON floats)."""
    return {
        name: repr(value) if isinstance(value, float) else value
        for name, value in budgets.items()
        if value is not None
    }


def carries_decision(rec: Mapping[str, Any]) -> bool:
    """Whether ``rec`` is a ``step.start`` carrying its own (allow) decision."""
    return rec.get("kind") == STEP_START and "effect" in rec


def witness_path(witness_dir: Path, run_id: str) -> Path:
    """Where the witness copy of ``run_id``'s latest checkpoint lives."""
    return witness_dir / f"{run_id}.checkpoint"


# --- DSSE payload types -------------------------------------------------------------------

LEASE_PAYLOAD_TYPE: Final = "application/vnd.tenure.lease.v1+json"
LEASE_BATCH_PAYLOAD_TYPE: Final = "application/vnd.tenure.lease-batch.v1+json"
APPROVAL_PAYLOAD_TYPE: Final = "application/vnd.tenure.approval.v1+json"
INTOTO_PAYLOAD_TYPE: Final = "application/vnd.in-toto+json"
INTOTO_STATEMENT_TYPE: Final = "https://in-toto.io/Statement/v1"

#: ``prev`` of record 0.
ZERO_HASH: Final = "0" * 64

# --- record kinds -------------------------------------------------------------------------

RUN_START: Final = "run.start"
ATTESTATION: Final = "attestation"
LEASE_ISSUED: Final = "lease.issued"
LEASE_RENEWED: Final = "lease.renewed"
LEASE_REVOKED: Final = "lease.revoked"
LEASE_BATCH: Final = "lease.batch"
DECISION: Final = "decision"
APPROVAL_REQUESTED: Final = "approval.requested"
APPROVAL_GRANTED: Final = "approval.granted"
APPROVAL_DENIED: Final = "approval.denied"
STEP_START: Final = "step.start"
STEP_END: Final = "step.end"
STEPS_STOPPED: Final = "steps.stopped"
STEP_ABANDONED: Final = "step.abandoned"
USAGE: Final = "usage"
VIOLATION: Final = "violation"
STALL: Final = "stall"
ISOLATION_KILLED: Final = "isolation.killed"
ISOLATION_STALL: Final = "isolation.stall"
POLICY_RELOADED: Final = "policy.reloaded"
CHECKPOINT: Final = "checkpoint"
RUN_END: Final = "run.end"
# A run across processes (a shared backend): the part of a run a worker ran opens with
# segment.start (where it came from and the delegated lease); the delegating segment records
# the task it queued and how it came back (the child's final signed tree head), or that its
# worker was lost (its durable prefix).
SEGMENT_START: Final = "segment.start"
DELEGATION_QUEUED: Final = "delegation.queued"
DELEGATION_RETURNED: Final = "delegation.returned"
DELEGATION_LOST: Final = "delegation.lost"

RUN_END_STATUSES: Final = frozenset({"ok", "violation", "error", "cancelled"})
#: what a ``lease.batch`` holds: newly issued leases, or new generations of live ones
LEASE_BATCH_PURPOSES: Final = frozenset({"issued", "renewed"})

# JSON types a field may have: "str", "int" (never a bool), "list[str]", "list[int]",
# "object".
COMMON_FIELDS: Final[Mapping[str, str]] = {
    "i": "int",
    "t": "int",
    "kind": "str",
    "prev": "str",
    "trace": "str",
    "span": "str",
}

_STEP_FIELDS = {"step": "str", "lease": "str", "action": "str", "target": "str"}
_STOP_FIELDS = {"error": "str", "check": "str", "reason": "str"}

RECORD_FIELDS: Final[Mapping[str, Mapping[str, str]]] = {
    RUN_START: {
        "run": "str",
        "principal": "str",
        "scopes": "list[str]",
        "ttl_ms": "int",
        "deadline": "int",
        "agent": "str",
        "args": "str",
        "policy": "str",
        "attestation": "str",
        "key": "str",
        "pubkey": "str",
        "runtime": "str",
        "config": "object",
        # Optional (older ledgers lack it): the policy budgets, floats as strings.
        "budgets": "object",
    },
    ATTESTATION: {"envelope": "object"},
    LEASE_ISSUED: {
        "lease": "str",
        "parent": "str",
        "subject": "str",
        "scopes": "list[str]",
        "exp": "int",
        "envelope": "object",
    },
    LEASE_RENEWED: {"lease": "str", "exp": "int", "envelope": "object"},
    # ``purpose`` (one of LEASE_BATCH_PURPOSES), ``envelope`` (DSSE over the payloads'
    # digests, see ``_batch``) and ``leases`` (each lease's payload, base64, in the order
    # of the signed digests).
    LEASE_BATCH: {"purpose": "str", "envelope": "object", "leases": "list[str]"},
    # ``cascade``: written by older runtimes only (descendants follow from parent links).
    LEASE_REVOKED: {"lease": "str", "reason": "str", "by": "str", "cascade": "list[str]"},
    # ``call`` / ``framework`` (since foreign calls): a call another framework made through
    # ``Context.govern`` / ``model_call``, by its own id (a tool-call id); absent otherwise.
    DECISION: {
        **_STEP_FIELDS,
        "caller": "str",
        "effect": "str",
        "rule": "str",
        "reason": "str",
        "args": "str",
        "call": "str",
        "framework": "str",
    },
    # ``args`` (the canonical arguments' digest), ``action_digest`` (what an approver
    # signs) and the approvers the policy accepted for the rule (names, and their keys as
    # ``"ed25519:<base64>"`` in the same order) are written since approvals are decided by
    # keys; older ledgers lack them.
    APPROVAL_REQUESTED: {
        "request": "str",
        "step": "str",
        "rule": "str",
        "action": "str",
        "target": "str",
        "principal": "str",
        "args": "str",
        "action_digest": "str",
        "approvers": "list[str]",
        "approver_keys": "list[str]",
    },
    # ``approver_key`` (the approver's key id) is written by runtimes whose approvals are
    # signed by declared approver keys; older ledgers name only ``approver``.
    APPROVAL_GRANTED: {
        "request": "str",
        "step": "str",
        "approver": "str",
        "approver_key": "str",
        "reason": "str",
        "envelope": "object",
    },
    APPROVAL_DENIED: {
        "request": "str",
        "step": "str",
        "approver": "str",
        "approver_key": "str",
        "reason": "str",
        "envelope": "object",
    },
    # ``caller`` / ``effect`` / ``rule`` / ``reason`` (since the batch format): the decision of
    # a step allowed outright, carried here; ``decision`` is then -1.
    STEP_START: {
        **_STEP_FIELDS,
        "caller": "str",
        "effect": "str",
        "rule": "str",
        "reason": "str",
        "decision": "int",
        "approval": "int",
        "parent": "str",
        "depth": "int",
        "args": "str",
        "call": "str",
        "framework": "str",
    },
    # ``items`` (since streaming tools): how many items a streamed tool call delivered; its
    # ``result`` is then a running SHA-256 over their value digests, in order.
    STEP_END: {
        "step": "str",
        "status": "str",
        "result": "str",
        "items": "int",
        "error": "str",
        "message": "str",
    },
    # ``outcome`` (``cleaned``: unwound within the cleanup grace; ``abandoned``: still running
    # when it ended) is written since the cleanup grace; older ledgers do not have it.
    STEPS_STOPPED: {
        "error": "str",
        "message": "str",
        "outcome": "str",
        "steps": "list[str]",
        "ended": "list[int]",
    },
    STEP_ABANDONED: {"step": "str", "reason": "str"},
    # ``model`` / ``provider`` / ``input_tokens`` / ``output_tokens`` (since model calls): who
    # was called and the split of ``tokens``; older ledgers have the total only.
    USAGE: {
        "step": "str",
        "tokens": "int",
        "cost_micros": "int",
        "model": "str",
        "provider": "str",
        "input_tokens": "int",
        "output_tokens": "int",
    },
    VIOLATION: {**_STOP_FIELDS, "lease": "str", "task": "str", "source": "str"},
    STALL: {"duration_ms": "int", "frame": "str"},
    ISOLATION_KILLED: {"step": "str", "pid": "int", "reason": "str"},
    ISOLATION_STALL: {"step": "str", "pid": "int", "duration_ms": "int", "frame": "str"},
    POLICY_RELOADED: {"policy": "str", "epoch": "int"},
    CHECKPOINT: {"size": "int", "root": "str", "note": "str"},
    RUN_END: {**_STOP_FIELDS, "status": "str", "result": "str"},
    SEGMENT_START: {
        "segment": "str",
        "parent_segment": "str",
        "parent_index": "int",
        "task": "str",
        "pool": "str",
        "lease": "object",
        "issuer": "str",
    },
    DELEGATION_QUEUED: {"step": "str", "task": "str", "pool": "str", "segment": "str"},
    DELEGATION_RETURNED: {
        "step": "str",
        "task": "str",
        "segment": "str",
        "status": "str",
        "size": "int",
        "checkpoint": "str",
    },
    DELEGATION_LOST: {
        "step": "str",
        "task": "str",
        "segment": "str",
        "size": "int",
        "checkpoint": "str",
    },
}

#: Fields without which a record of that kind means nothing; every writer since 0.1.0 wrote
#: them, so their absence is malformed evidence, not an older format.
REQUIRED_FIELDS: Final[Mapping[str, frozenset[str]]] = {
    RUN_START: frozenset({"run", "pubkey"}),
    ATTESTATION: frozenset({"envelope"}),
    LEASE_ISSUED: frozenset({"lease", "exp", "envelope"}),
    LEASE_RENEWED: frozenset({"lease", "exp", "envelope"}),
    LEASE_REVOKED: frozenset({"lease"}),
    LEASE_BATCH: frozenset({"purpose", "envelope", "leases"}),
    APPROVAL_GRANTED: frozenset({"step", "envelope"}),
    APPROVAL_DENIED: frozenset({"envelope"}),
    STEP_START: frozenset({"step", "lease", "action", "target", "decision"}),
    STEP_END: frozenset({"step"}),
    STEPS_STOPPED: frozenset({"steps", "ended"}),
    CHECKPOINT: frozenset({"size", "root", "note"}),
    RUN_END: frozenset({"status"}),
}

_EXPECTED = {
    "str": "a string",
    "int": "an integer",
    "list[str]": "a list of strings",
    "list[int]": "a list of integers",
    "object": "a JSON object",
}


_PYTYPE: Final = {"str": str, "int": int, "object": dict, "list[str]": list, "list[int]": list}
_ELEMENT: Final = {"list[str]": str, "list[int]": int}
_MISSING: Final = object()


def _plan(fields: Mapping[str, str]) -> tuple[tuple[str, type, str], ...]:
    return tuple((name, _PYTYPE[want], want) for name, want in fields.items())


# Per kind, precomputed once: (field, Python type, declared type), and the list fields
# whose elements are checked too. ``field_problem`` runs on every record a view reads.
_COMMON_PLAN: Final = _plan(COMMON_FIELDS)
_PLANS: Final = {kind: _plan(fields) for kind, fields in RECORD_FIELDS.items()}
_LIST_PLANS: Final = {
    kind: tuple((name, _ELEMENT[want]) for name, want in fields.items() if want in _ELEMENT)
    for kind, fields in RECORD_FIELDS.items()
}


def field_problem(rec: Mapping[str, Any]) -> tuple[str, str] | None:
    """``(field, what was expected)`` for the first declared field with the wrong type (or a
    required one missing), or ``None`` when the record matches its kind's declaration.

    ``rec`` must already have a string ``kind``; kinds not declared here have only their
    common fields checked.
    """
    get = rec.get
    for name, pytype, want in _COMMON_PLAN:
        value = get(name, _MISSING)
        if value is not _MISSING and type(value) is not pytype:
            return name, _EXPECTED[want]
    kind = rec["kind"]
    plan = _PLANS.get(kind)
    if plan is None:
        return None
    for name in REQUIRED_FIELDS.get(kind, ()):
        if name not in rec:
            return name, f"{_EXPECTED[RECORD_FIELDS[kind][name]]} (required in a {kind} record)"
    for name, pytype, want in plan:
        value = get(name, _MISSING)
        if value is not _MISSING and type(value) is not pytype:
            return name, _EXPECTED[want]
    for name, element in _LIST_PLANS[kind]:
        value = get(name)
        if value is not None and any(type(v) is not element for v in value):
            return name, _EXPECTED[RECORD_FIELDS[kind][name]]
    return None
