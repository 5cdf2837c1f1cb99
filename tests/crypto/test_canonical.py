"""Ledger record bytes are RFC 8785 on the ledger's domain, whatever encoder writes them."""

from __future__ import annotations

import json
from typing import Any

import pytest
import rfc8785
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tenure.crypto._canonical import (
    b64d,
    b64e,
    canonical_fast,
    check_record_domain,
    record_bytes,
)
from tenure.crypto._values import value_digest

_SAFE = 2**53 - 1
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-_SAFE, _SAFE),
    st.text(max_size=20),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(st.characters(max_codepoint=127), max_size=6), inner, max_size=4),
    ),
    max_leaves=12,
)
_records = st.dictionaries(
    st.text(st.characters(max_codepoint=127), min_size=1, max_size=8), _values, max_size=10
)


@settings(
    max_examples=400,
    derandomize=True,
    database=None,
    deadline=None,
    # The first draw can be slow on a loaded CI machine; this is not a performance test.
    suppress_health_check=[HealthCheck.too_slow],
)
@given(_records)
def test_record_bytes_equal_rfc8785_and_json_dumps_on_the_ledger_domain(
    rec: dict[str, Any],
) -> None:
    """The fast encoder, the stdlib form and the RFC 8785 reference agree byte for byte."""
    check_record_domain(rec)
    fast = record_bytes(rec)
    assert fast == rfc8785.dumps(rec) == canonical_fast(rec)
    assert fast == json.dumps(
        rec, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")


@pytest.mark.parametrize(
    "value",
    [
        {"a": 1.5, "b": [1e21, -0.0]},  # floats: RFC 8785 number serialization
        {"big": 2**53 + 1},  # outside I-JSON: refused, not rounded
        {"é": "ü", "\u20ac": 1},  # non-ASCII keys sort by UTF-16 code units
        {"s": "\u2028\ud7ff", "n": None},
    ],
)
def test_canonical_fast_is_rfc8785_outside_the_ledger_domain_too(value: Any) -> None:
    """Leases use canonical_fast: it never writes bytes rfc8785 would not write."""
    try:
        expected = rfc8785.dumps(value)
    except rfc8785.CanonicalizationError as exc:
        with pytest.raises(type(exc)):
            canonical_fast(value)
    else:
        assert canonical_fast(value) == expected


@pytest.mark.parametrize(
    ("value", "where"),
    [
        ({"a": 1.5}, "$.a: floats"),
        ({"a": [2**53]}, "$.a[0]: integer"),
        ({"é": 1}, "is not an ASCII string"),
        ({"a": object()}, "$.a: object is not a JSON value"),
    ],
)
def test_values_outside_the_ledger_domain_are_named(value: Any, where: str) -> None:
    with pytest.raises(ValueError, match=where.replace("[", r"\[").replace("$", r"\$")):
        check_record_domain(value)


def test_value_digest_is_stable_and_order_independent() -> None:
    """Digests of arguments/results do not depend on dict order; odd values still digest."""
    assert value_digest({"a": 1, "b": [1, 2]}) == value_digest({"b": [1, 2], "a": 1})
    assert value_digest((1, 2)) != value_digest([1, 2])  # a tuple is not a list
    assert value_digest({1, 2}) == value_digest({2, 1})
    assert value_digest(2**80) != value_digest(2**80 + 1)  # beyond orjson's ints: tagged
    assert value_digest(b"x") != value_digest("x")


def test_base64_accepts_standard_and_url_safe_forms() -> None:
    data = bytes(range(256))
    assert b64d(b64e(data)) == data
    assert b64d(b64e(data).replace("+", "-").replace("/", "_").rstrip("=")) == data
