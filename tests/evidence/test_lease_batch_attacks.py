"""Attacks on the batch format: ``lease.batch`` records (one signature over many leases'
payload digests) and ``step.start`` records carrying their own decision. Each is refused
with the check it fails, at the record it names; the honest form verifies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tenure.crypto import SigningKey, canonical, digest
from tenure.evidence import VerifyReport, verify_run
from tests.support.run_builder import RunBuilder

ROOT = {"lid": "L0", "parent": None, "scopes": ["web:read"]}
CHILD = {"lid": "L1", "parent": "L0", "scopes": ["web:read"]}


def _verify(b: RunBuilder) -> VerifyReport:
    return verify_run(b.run_dir, b.key.public_key, witness_dir=b.evidence / ".witness")


def _refused(b: RunBuilder, at: int, check: str) -> VerifyReport:
    b.end()
    rep = _verify(b)
    assert not rep.ok and rep.failures[0].code == check, rep.failure_line()
    assert rep.first_bad_index == at, rep.failure_line()
    return rep


def _payload(b: RunBuilder, claims: dict[str, Any]) -> bytes:
    return canonical({"run": b.run_id, "exp": b.deadline, **claims})


def test_an_honest_batch_and_carried_allows_verify(tmp_path: Path) -> None:
    b = RunBuilder(tmp_path)
    b.batch([ROOT, CHILD])
    b.carried_start("s1", "L1")
    b.step_end("s1")
    b.batch([ROOT], purpose="renewed")
    b.end()
    rep = _verify(b)
    assert rep.ok, rep.failure_line()


def test_a_payload_the_batch_did_not_sign_is_refused(tmp_path: Path) -> None:
    """The second payload is swapped for a wider lease; the batch signs the original."""
    b = RunBuilder(tmp_path)
    honest = [digest(_payload(b, ROOT)), digest(_payload(b, CHILD))]
    wider = {**CHILD, "scopes": ["web:read", "payments"]}
    at = b.batch([ROOT, wider], signed=honest)
    _refused(b, at, "lease.unsigned")


def test_a_payload_dropped_from_the_record_is_refused(tmp_path: Path) -> None:
    b = RunBuilder(tmp_path)
    both = [digest(_payload(b, ROOT)), digest(_payload(b, CHILD))]
    at = b.batch([ROOT], signed=both)
    _refused(b, at, "lease.unsigned")


def test_a_batch_signed_by_another_key_is_refused(tmp_path: Path) -> None:
    b = RunBuilder(tmp_path)
    at = b.batch([ROOT], key=SigningKey.generate())
    _refused(b, at, "lease.batch")


def test_another_runs_batch_replayed_here_is_refused(tmp_path: Path) -> None:
    b = RunBuilder(tmp_path)
    at = b.batch([ROOT], run="run-other")
    _refused(b, at, "lease.batch")


def test_a_batch_listing_a_digest_twice_is_refused(tmp_path: Path) -> None:
    b = RunBuilder(tmp_path)
    d = digest(_payload(b, ROOT))
    at = b.batch([ROOT, ROOT], signed=[d, d])
    _refused(b, at, "lease.batch")


def test_a_batch_with_an_unknown_purpose_is_refused(tmp_path: Path) -> None:
    b = RunBuilder(tmp_path)
    at = b.batch([ROOT], purpose="granted")
    _refused(b, at, "lease.batch")


def test_a_renewal_batch_for_a_lease_never_issued_is_refused(tmp_path: Path) -> None:
    b = RunBuilder(tmp_path)
    b.batch([ROOT])
    at = b.batch([CHILD], purpose="renewed")
    _refused(b, at, "lease.parent")


def test_a_batched_child_wider_than_its_parent_is_refused(tmp_path: Path) -> None:
    b = RunBuilder(tmp_path)
    at = b.batch([ROOT, {**CHILD, "scopes": ["web:read", "payments"]}])
    _refused(b, at, "lease.widens")


def test_a_step_carrying_a_deny_as_its_decision_is_refused(tmp_path: Path) -> None:
    """Only an outright allow may ride in a step.start: a deny there would be a step that
    ran though refused."""
    b = RunBuilder(tmp_path)
    b.batch([ROOT])
    at = b.carried_start("s1", "L0", effect="deny")
    _refused(b, at, "step.decision")


def test_a_carried_allow_that_also_names_a_decision_record_is_refused(tmp_path: Path) -> None:
    b = RunBuilder(tmp_path)
    b.batch([ROOT])
    d = b.decision("s1", "L0", effect="deny")
    at = b.carried_start("s1", "L0", decision=d)
    _refused(b, at, "step.decision")


def test_a_carried_allow_under_a_lease_never_issued_is_refused(tmp_path: Path) -> None:
    b = RunBuilder(tmp_path)
    b.batch([ROOT])
    at = b.carried_start("s1", "L9")
    _refused(b, at, "step.lease")
