"""Reading facts out of ledger records in tests, whichever way the runtime wrote them.

Leases arrive as single ``lease.issued`` / ``lease.renewed`` envelopes or in ``lease.batch``
records; a step allowed outright carries its decision in its ``step.start``, any other
decision is a ``decision`` record (see ``tenure/evidence/_format.py``). No tests live here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tenure.evidence._batch import leases_of
from tenure.evidence._format import carries_decision


def issued_leases(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The claims of every lease issued, in ledger order."""
    return [
        claims
        for rec in records
        if rec["kind"] == "lease.issued"
        or (rec["kind"] == "lease.batch" and rec["purpose"] == "issued")
        for claims in leases_of(rec)
    ]


def renewed_leases(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The claims of every renewed lease generation, in ledger order."""
    return [
        claims
        for rec in records
        if rec["kind"] == "lease.renewed"
        or (rec["kind"] == "lease.batch" and rec["purpose"] == "renewed")
        for claims in leases_of(rec)
    ]


def decisions(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every decision: ``decision`` records and the allows ``step.start`` records carry."""
    return [rec for rec in records if rec["kind"] == "decision" or carries_decision(rec)]
