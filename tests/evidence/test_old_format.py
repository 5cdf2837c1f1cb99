"""Ledgers written before the lease-batch format (frozen in ``fixtures/format1``) are read
by every reader: one envelope per lease, a ``decision`` record before every ``step.start``,
``lease.revoked`` listing its cascade, and a close signed twice (the checkpoint file covers
the final checkpoint record too). See CHANGELOG, "Evidence format"."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tenure.crypto import load_public_key
from tenure.evidence import verify_run
from tenure.lineage import load_trace
from tenure.lineage._report import render_report

FIXTURES = Path(__file__).parent / "fixtures" / "format1"
OK_RUN = "run_55b3ea1095fa7c5d"  # two delegations, a denial: every old record kind
REVOKED_RUN = "run_766330c368afdb53"  # revoked root lease, cascade listed


def _copy(tmp_path: Path, run: str) -> Path:
    """A writable copy of a frozen run, with the witness copy beside it (``.witness``)."""
    shutil.copytree(FIXTURES, tmp_path / "format1")
    return tmp_path / "format1" / run


@pytest.mark.parametrize("run", [OK_RUN, REVOKED_RUN])
def test_a_ledger_in_the_old_format_verifies_under_its_key(tmp_path: Path, run: str) -> None:
    rep = verify_run(_copy(tmp_path, run), load_public_key(FIXTURES / "tenure.pub"))
    assert rep.ok and rep.verdict == "verified", rep.failure_line()
    # The old close signed twice: the checkpoint file covers every record, its own included.
    assert rep.signed_size == rep.witness_size == rep.records
    assert rep.warnings == []


def test_a_flipped_byte_in_an_old_format_ledger_is_still_caught(tmp_path: Path) -> None:
    run_dir = _copy(tmp_path, OK_RUN)
    ledger = run_dir / "ledger.jsonl"
    data = bytearray(ledger.read_bytes())
    at = data.index(b'"no-pay"') + 2
    data[at] ^= 1
    ledger.write_bytes(bytes(data))
    rep = verify_run(run_dir, load_public_key(FIXTURES / "tenure.pub"))
    assert not rep.ok and rep.first_bad_index is not None


def test_the_trace_of_an_old_ledger_shows_each_decision_and_the_denial() -> None:
    tr = load_trace(FIXTURES / OK_RUN)
    [researcher] = tr.root.children
    assert researcher.decision == {
        "effect": "allow",
        "rule": "allow-all",
        "reason": "allowed by rule 'allow-all'",
    }
    kids = [(c.name, c.status) for c in researcher.children]
    assert kids == [
        ("search", "ok"),
        ("pay", "denied"),
        ("summarizer", "ok"),
        ("search", "ok"),
        ("summarizer", "ok"),
    ]


def test_an_old_revocation_counts_its_listed_cascade_without_the_lease_itself() -> None:
    tr = load_trace(FIXTURES / REVOKED_RUN)
    events = [e for n in (tr.root, *tr.root.children) for e in n.events]
    [revoked] = [e for e in events if e["kind"] == "lease.revoked"]
    assert revoked["cascade"] == "0"  # the list named only the root lease itself
    assert tr.status == "violation"


def test_the_report_of_an_old_ledger_renders_its_decisions_and_revocation(
    tmp_path: Path,
) -> None:
    html = render_report(_copy(tmp_path, REVOKED_RUN))
    assert "revocation" in html and "fixture" in html
    assert "allow-all" in html
