"""A lease's payload is the RFC 8785 canonical JSON of its claims, whichever encoder wrote it.

The authority writes payloads with a typed encoder (``claims_payload``); a verifier (and
every older ledger) knows them as ``rfc8785.dumps`` of the claims. The two must agree byte
for byte on every claims value the authority can make, and on values it should not make the
typed encoder must step aside for the reference (which represents them or refuses).
"""

from __future__ import annotations

import tracemalloc
from typing import Any

import pytest
import rfc8785
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tenure.crypto import canonical
from tenure.evidence._batch import lease_batch_payload
from tenure.runtime.kernel._lease import _scope_set, claims_json, claims_payload, new_claims

_SAFE = 2**53 - 1
_text = st.text(max_size=24)  # any code point: controls, quotes, non-BMP, the BOM ...
_ints = st.integers(-_SAFE, _SAFE)
_claims = st.fixed_dictionaries(
    {
        "v": st.just(1),
        "lid": _text,
        "gen": _ints,
        "run": _text,
        "parent": st.none() | _text,
        "parent_lid": st.none() | _text,
        "depth": _ints,
        "iss": _text,
        "aud": _text,
        "principal": _text,
        "sub": _text,
        "scopes": st.lists(_text, max_size=5).map(lambda s: tuple(sorted(set(s)))),
        "iat": _ints,
        "nbf": _ints,
        "exp": _ints,
        "nonce": _text,
        "policy": _text,
        "attestation": _text,
        "epoch": _ints,
    }
)

_BASE: dict[str, Any] = {
    "v": 1,
    "lid": "0" * 32,
    "gen": 0,
    "run": "run-1",
    "parent": None,
    "parent_lid": None,
    "depth": 0,
    "iss": "key-1",
    "aud": "runtime-1",
    "principal": "alice@example.com",
    "sub": "agent:root",
    "scopes": ("read",),
    "iat": 1_700_000_000_000_000,
    "nbf": 1_700_000_000_000_000,
    "exp": 1_700_000_030_000_000,
    "nonce": "1" * 32,
    "policy": "sha256:" + "2" * 64,
    "attestation": "sha256:" + "3" * 64,
    "epoch": 0,
}

_SETTINGS = settings(
    max_examples=500,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@_SETTINGS
@given(_claims)
def test_typed_claims_payload_equals_rfc8785_of_the_claims(values: dict[str, Any]) -> None:
    """Byte-identical to the reference on every claims value the authority can make."""
    claims = new_claims(values)
    payload = claims_payload(claims)
    assert payload == rfc8785.dumps(claims_json(claims)) == canonical(claims_json(claims))


class _Str(str):
    """A string subclass: a value that is not the plain type the typed encoder expects."""


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("sub", _Str("agent:x")),
        ("depth", True),
        ("scopes", ["a", "b"]),
        ("scopes", ("a", 1)),
        ("nonce", 3),
    ],
)
def test_claims_of_another_shape_are_encoded_by_the_reference(field: str, value: Any) -> None:
    """A value of an unexpected type gets exactly what RFC 8785 makes of it."""
    values = _BASE | {field: value}
    claims = new_claims(values)
    assert claims_payload(claims) == rfc8785.dumps(claims_json(claims))


@pytest.mark.parametrize("value", [2**53, -(2**53), 10**30])
def test_claims_with_an_integer_outside_ijson_are_refused(value: int) -> None:
    """Past ±(2**53-1) the reference refuses, and so does the payload (never a lossy form)."""
    claims = new_claims(_BASE | {"exp": value})
    with pytest.raises(rfc8785.IntegerDomainError):
        claims_payload(claims)


def test_a_payload_holds_no_more_memory_than_its_bytes() -> None:
    """Each payload is its own exact-size object (orjson's output buffer is not kept)."""
    claims = new_claims(_BASE | {"scopes": ("read", "write"), "sub": "agent:a"})
    size = len(claims_payload(claims))
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [claims_payload(claims) for _ in range(100)]
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(kept) == 100
    assert held < 100 * (size + 128)


class _Equal(str):
    """A scope that claims to equal every other scope (and hashes like ``"read"``)."""

    def __eq__(self, other: object) -> bool:
        return True

    def __hash__(self) -> int:
        return hash("read")


def test_a_scope_that_lies_about_its_equality_never_gets_another_leases_scope_set() -> None:
    """Leases with the same scopes share one frozen set; an impostor tuple gets its own."""
    admin = _scope_set(("admin",))
    assert _scope_set(("admin",)) is admin  # shared: a fan-out's leases hold one set
    impostor = _scope_set((_Equal("read"),))
    assert impostor is not admin and impostor is not _scope_set(("read",))
    assert _scope_set(("admin",)) == frozenset({"admin"})  # the shared set is unchanged


@_SETTINGS
@given(st.text(max_size=24), st.lists(st.text(max_size=72), min_size=1, max_size=8))
def test_a_batch_payload_is_the_rfc8785_form_of_its_object(run: str, digests: list[str]) -> None:
    """What a batch signs is byte-identical to the reference, whatever strings it lists."""
    reference = rfc8785.dumps({"leases": digests, "run": run, "v": 1})
    assert lease_batch_payload(run, digests) == reference
    assert lease_batch_payload(_Str(run), digests) == reference  # the generic path agrees


def test_a_claims_object_with_an_extra_member_is_encoded_from_its_fields_only() -> None:
    """A name slipped into the claims' ``__dict__`` never reaches the signed bytes."""
    claims = new_claims(_BASE | {"admin": True})
    assert claims_payload(claims) == rfc8785.dumps(claims_json(claims))
    assert b"admin" not in claims_payload(claims)
