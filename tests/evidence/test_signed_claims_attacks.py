"""Leases signed by the run's own key whose claims lie about themselves.

A valid signature is not a valid lease: a writer with a bug, or a key that also signed
something else, can produce an envelope that verifies over claims no runtime would issue.
Each one is refused at its record, under the check that names what is wrong, and nothing
after it is believed (``first_bad_index`` is the lying record).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tenure.crypto import canonical, sign_envelope
from tenure.evidence import LEASE_PAYLOAD_TYPE, verify_run
from tests.support.run_builder import RunBuilder

Claims = dict[str, Any]


def _issue_signed(b: RunBuilder, claims: Any, *, lid: str = "L1", parent: str = "L0") -> int:
    """A ``lease.issued`` record for ``lid`` whose envelope signs ``claims`` as given."""
    env = sign_envelope(b.key, LEASE_PAYLOAD_TYPE, canonical(claims))
    signed_exp = claims.get("exp") if isinstance(claims, dict) else None
    exp = signed_exp if type(signed_exp) is int else b.deadline  # the record's field is typed
    return b.ledger.append(
        "lease.issued",
        {
            "lease": lid,
            "parent": parent,
            "subject": "agent:researcher",
            "scopes": ["web:read"],
            "exp": exp,
            "envelope": env,
        },
    )


def _honest(b: RunBuilder, **changes: Any) -> Claims:
    claims: Claims = {
        "lid": "L1",
        "run": b.run_id,
        "exp": b.deadline,
        "scopes": ["web:read"],
        "parent": "L0",
    }
    claims.update(changes)
    return claims


LIES: dict[str, tuple[Any, str, str]] = {
    # name: (changes to the honest claims, or a whole payload; check; words of the reason)
    "lease_id_not_a_string": ({"lid": 7}, "lease.envelope", "is for 7"),
    "another_run": ({"run": "run-9999"}, "lease.envelope", "is for run 'run-9999'"),
    "exp_not_an_int": ({"exp": "later"}, "lease.envelope", "signed exp 'later' is not an int"),
    "exp_past_the_run_deadline": ({"exp": "deadline+1"}, "lease.deadline", "after the run"),
    "scopes_a_string": ({"scopes": "web:read"}, "lease.envelope", "must be a list of strings"),
    "scopes_holding_a_number": ({"scopes": [1]}, "lease.envelope", "must be a list of strings"),
    "parent_not_an_id": ({"parent": 5}, "lease.parent", "parent 5 is not a lease id"),
    "parent_never_issued": ({"parent": "L9"}, "lease.parent", "L9 was never issued"),
    "payload_a_list": ("list", "lease.envelope", "payload is not a JSON object"),
}


@pytest.mark.parametrize("lie", sorted(LIES))
def test_a_signed_lease_whose_claims_lie_is_refused_at_its_record(tmp_path: Path, lie: str) -> None:
    b = RunBuilder(tmp_path)
    b.issue("L0")
    changes, check, why = LIES[lie]
    if changes == "list":
        claims: Any = ["L1", b.run_id]
    elif changes == {"exp": "deadline+1"}:
        claims = _honest(b, exp=b.deadline + 1)
    else:
        claims = _honest(b, **changes)
    bad = _issue_signed(b, claims)
    b.step("L1")
    b.end()
    rep = verify_run(b.run_dir, b.key.public_key)
    assert rep.verdict == "invalid"
    assert rep.first_bad_index == bad, rep.failures
    assert rep.failures[0].code == check
    assert why in rep.failures[0].message, rep.failures[0].message


def test_a_lease_issued_twice_is_refused_the_second_time(tmp_path: Path) -> None:
    b = RunBuilder(tmp_path)
    b.issue("L0")
    b.issue("L1", parent="L0")
    bad = b.issue("L1", parent="L0")
    b.end()
    rep = verify_run(b.run_dir, b.key.public_key)
    assert rep.first_bad_index == bad and rep.failures[0].code == "lease.duplicate"


def test_a_record_naming_another_parent_than_its_signed_lease_is_refused(
    tmp_path: Path,
) -> None:
    """The attack: the record says the lease descends from ``L0`` (narrow) while the
    signed claims have no parent: a reader trusting the record would see a delegation that
    was never signed."""
    b = RunBuilder(tmp_path)
    b.issue("L0")
    bad = _issue_signed(b, _honest(b, parent=None), parent="L0")
    b.end()
    rep = verify_run(b.run_dir, b.key.public_key)
    assert rep.first_bad_index == bad and rep.failures[0].code == "lease.parent"
    assert "record parent differs from the signed one" in rep.failures[0].message
