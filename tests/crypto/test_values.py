"""The value digest is injective over the canonical domain; snapshots freeze what runs."""

from __future__ import annotations

import dataclasses
import decimal
import enum
import math
import uuid
from typing import Any, NamedTuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from tenure.crypto._snapshot import NotCanonical, decision_view, snapshot_call
from tenure.crypto._values import _I64, MAX_DEPTH, _is_plain, encode, value_digest

_settings = settings(
    max_examples=500,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

_hashable_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),  # NaN != NaN: it cannot be a key of a value we compare
    st.text(max_size=8),
    st.binary(max_size=4),
)
_scalars = st.one_of(_hashable_scalars, st.just(math.nan), st.just(-0.0))


def _canonical() -> st.SearchStrategy[Any]:
    return st.recursive(
        _scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3),
            st.lists(inner, max_size=3).map(tuple),
            st.dictionaries(_hashable_scalars, inner, max_size=3),
            st.sets(_hashable_scalars, max_size=3),
            st.frozensets(_hashable_scalars, max_size=3),
        ),
        max_leaves=10,
    )


def _same(a: Any, b: Any) -> bool:
    """Equality that also tells types apart and treats NaN as equal to itself."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (
            a == b and math.copysign(1, a) == math.copysign(1, b)
        )
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        if len(a) != len(b):
            return False
        eb = {encode(k): v for k, v in b.items()}
        return all(encode(k) in eb and _same(v, eb[encode(k)]) for k, v in a.items())
    if isinstance(a, set | frozenset):
        return {encode(x) for x in a} == {encode(x) for x in b}
    return bool(a == b)


@_settings
@given(_canonical(), _canonical())
def test_distinct_values_never_share_a_digest(a: Any, b: Any) -> None:
    """Injectivity: equal encodings only for the same value (types included)."""
    if encode(a) == encode(b):
        assert _same(a, b), (a, b)
    else:
        assert not _same(a, b), (a, b)
        assert value_digest(a) != value_digest(b)


@_settings
@given(_canonical())
def test_the_digest_is_a_function_of_the_value(a: Any) -> None:
    """The same value, rebuilt, digests the same (dict and set order do not matter)."""
    snap = snapshot_call((a,), {})
    assert encode(snap.thaw()[0][0]) == encode(a)
    assert value_digest([[a], {}]) == value_digest(snap.value())


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (None, math.nan),
        (math.nan, math.inf),
        (math.inf, -math.inf),
        (0.0, -0.0),
        (1, 1.0),
        (1, True),
        (b"\x01", {"bytes": "01"}),
        (b"x", "x"),
        (b"x", bytearray(b"x")),
        ({1, 2}, [1, 2]),
        ({1, 2}, frozenset({1, 2})),
        ((1, 2), [1, 2]),
        ({1: "a"}, {"1": "a"}),
        (2**80, str(2**80)),
        ({"repr": "1"}, 1),
    ],
)
def test_values_that_used_to_collide_get_distinct_digests(a: Any, b: Any) -> None:
    """Every collision of the v1 digest (JSON with repr fallbacks) is gone."""
    assert value_digest(a) != value_digest(b)


class _LyingInt(int):
    def __gt__(self, other: object) -> bool:
        return False

    def __eq__(self, other: object) -> bool:
        return True

    __hash__ = int.__hash__


class _LyingStr(str):
    def __eq__(self, other: object) -> bool:
        return False

    __hash__ = str.__hash__


class _Invoice(BaseModel):
    to: str
    amount: int


@dataclasses.dataclass
class _Order:
    items: list[str]
    total: float


class _Point(NamedTuple):
    x: int
    y: int


class _Color(enum.Enum):
    RED = "red"


def test_values_that_lie_about_themselves_are_snapshotted_as_what_they_hold() -> None:
    """An int or str subclass becomes the exact int or str it holds, in decision and body."""
    snap = snapshot_call((_LyingInt(5000),), {"to": _LyingStr("acct-9")})
    args, kwargs = snap.thaw()
    assert type(args[0]) is int and args[0] == 5000
    assert type(kwargs["to"]) is str and kwargs["to"] == "acct-9"
    assert value_digest(snap.value()) == value_digest([[5000], {"to": "acct-9"}])


def test_models_dataclasses_and_records_are_rebuilt_fresh_for_the_body() -> None:
    """The body gets new objects of the same types with the same fields, nothing shared."""
    inv = _Invoice(to="acct-1", amount=10)
    order = _Order(items=["a"], total=2.5)
    snap = snapshot_call((inv, order, _Point(1, 2)), {"tags": {"x"}, "when": uuid.UUID(int=1)})
    (inv2, order2, point2), kw = snap.thaw()
    assert type(inv2) is _Invoice and inv2 == inv and inv2 is not inv
    assert type(order2) is _Order and order2 == order and order2.items is not order.items
    assert type(point2) is _Point and point2 == (1, 2)
    assert kw == {"tags": {"x"}, "when": uuid.UUID(int=1)}
    assert value_digest(snap.value()) == value_digest([[inv, order, _Point(1, 2)], kw])


def test_an_argument_edited_after_the_snapshot_changes_nothing_that_runs() -> None:
    """The attack: another task edits the approved dict; the body still gets the approved one."""
    invoice = {"to": "acct-1", "amount": 10, "lines": [1, 2]}
    snap = snapshot_call((invoice,), {})
    digest_before = value_digest(snap.value())
    invoice["to"] = "acct-attacker"
    invoice["lines"].append(3)  # type: ignore[attr-defined]
    body_args, _ = snap.thaw()
    assert body_args[0] == {"to": "acct-1", "amount": 10, "lines": [1, 2]}
    body_args[0]["to"] = "mutated by the body"
    assert snap.thaw()[0][0]["to"] == "acct-1"  # the body cannot edit the snapshot either
    assert value_digest(snap.value()) == digest_before


@pytest.mark.parametrize(
    ("value", "path"),
    [
        (object(), "args[0]"),
        ({"a": [1, {"b": open}]}, "args[0]['a'][1]['b']"),
        (_Order(items=[object()], total=1.0), "args[0].items[0]"),  # type: ignore[list-item]
    ],
)
def test_arguments_without_a_canonical_form_are_refused_with_their_path(
    value: Any, path: str
) -> None:
    """Anything outside the domain is refused, naming where it is and what is accepted."""
    with pytest.raises(NotCanonical) as err:
        snapshot_call((value,), {})
    assert err.value.path == path
    assert "has no canonical form" in str(err.value) and "accepted:" in str(err.value)


def test_cyclic_or_too_deep_arguments_are_refused() -> None:
    """A cycle (or nesting past MAX_DEPTH) is refused, not a RecursionError."""
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    with pytest.raises(NotCanonical, match="nested deeper"):
        snapshot_call((cyclic,), {})
    deep: Any = 1
    for _ in range(MAX_DEPTH + 1):
        deep = [deep]
    with pytest.raises(NotCanonical, match="nested deeper"):
        snapshot_call((), {"x": deep})


def test_results_of_any_kind_get_a_digest_even_when_repr_raises() -> None:
    """value_digest never raises: opaque values are tagged by type and repr."""

    class Hostile:
        def __repr__(self) -> str:
            raise RuntimeError("no")

    cyclic: list[Any] = []
    cyclic.append(cyclic)
    for value in (Hostile(), cyclic, object(), "\ud800", {"\udfff": 1}):
        assert value_digest(value).startswith("sha256:")
    assert value_digest(Hostile()) == value_digest(Hostile())
    assert value_digest("\ud800") != value_digest("\udfff")


def test_enum_members_and_decimals_are_canonical() -> None:
    """Enum members pass as themselves; a condition compares their value."""
    snap = snapshot_call((_Color.RED, decimal.Decimal("1.10")), {})
    assert snap.thaw()[0] == (_Color.RED, decimal.Decimal("1.10"))
    assert decision_view(_Color.RED) == "red"
    assert value_digest(decimal.Decimal("1.1")) != value_digest(decimal.Decimal("1.10"))


def test_agent_arguments_without_a_canonical_form_pass_as_opaque_and_are_never_compared() -> None:
    """An orchestrating agent may get an event or a client: kept as itself, digested by type
    and repr, and a policy condition that names it denies (it is no exact scalar)."""
    from tenure.policies import PolicySet

    event = object()
    snap = snapshot_call((), {"done": event, "n": 1}, opaque=True)
    assert snap.thaw()[1]["done"] is event
    assert value_digest(snap.value()).startswith("sha256:")
    ps = PolicySet.from_text(
        'version = 1\n[[rules]]\nid = "r"\neffect = "allow"\n'
        'when = { "args.done" = { eq = "x" } }\n'
    )
    d = ps.decide("alice", "invoke_agent", "a", None, snap.kwargs)
    assert d.effect == "deny" and "cannot compare object" in d.reason


# Digests of the format as first released (tenure.value.v2): a faster encoder must keep them.
_GOLDEN = [
    (5, "5a952c315daf8a98302ee721091dfaf23dae16298b971f5dc3ca6dc64a49533e"),
    ([[5], {}], "39c60c382144d708445e704dcd1aa4eaa2431e74e43363d082e5a71e4b2fecdd"),
    (
        [["abc", 3, None, True, 1.5], {"k": [1, {"z": "y", "a": 2**63 - 1}]}],
        "b9f63cb797486c3e9fdf9a32ffa85376bb31b4f8b5d6d6bdb93606bb9c7bbc4b",
    ),
    ([[2**63], {}], "b42b51359a490799745a455527da33b5ec5794927fd8cf403470e73dc322c7e5"),
    ([[math.inf], {}], "da3437c5faabfdb6f7e7565483cfa918ce35308700600e1f8892f19edc7a840c"),
    ([["\ud800"], {}], "c03595d9180ae672bd75d8479f29ad855777eb3d2cd5b00d78a895b0e74f6ac8"),
    ([[(1, 2)], {1: "a"}], "6721dc866aaa94fdb4f0ea3e89248dd2892f604ea833ce2af80d3848c0c25373"),
]


@pytest.mark.parametrize(("value", "digest"), _GOLDEN)
def test_digests_of_plain_and_tagged_values_are_those_of_the_released_format(
    value: Any, digest: str
) -> None:
    assert value_digest(value) == "sha256:" + digest


def _plain_by_definition(v: Any, depth: int) -> bool:
    """The plain-JSON part of the domain exactly as the module docstring defines it."""
    t = type(v)
    if t is str or t is bool or v is None:
        return True
    if t is int:
        return bool(-_I64 <= v <= _I64)
    if t is float:
        return math.isfinite(v)
    if depth >= MAX_DEPTH:
        return False
    if t is list:
        return all(_plain_by_definition(x, depth + 1) for x in v)
    if t is dict:
        return all(type(k) is str and _plain_by_definition(x, depth + 1) for k, x in v.items())
    return False


_edge_scalars = st.one_of(
    _scalars,
    st.sampled_from([_I64, -_I64, _I64 + 1, -_I64 - 1, math.inf, -math.inf, "\ud800", ""]),
)


def _near_plain() -> st.SearchStrategy[Any]:
    """Mostly plain JSON, with the values that make it tagged mixed in at any depth."""
    return st.recursive(
        _edge_scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4),
            st.lists(inner, max_size=2).map(tuple),
            st.dictionaries(st.text(max_size=3), inner, max_size=4),
            st.dictionaries(_hashable_scalars, inner, max_size=2),
        ),
        max_leaves=16,
    )


def _nested(value: Any, depth: int) -> Any:
    for _ in range(depth):
        value = [value]
    return value


@_settings
@given(_near_plain(), st.integers(min_value=0, max_value=MAX_DEPTH + 2))
def test_the_fast_plain_check_agrees_with_the_definition(value: Any, depth: int) -> None:
    """Which values take the plain encoding is the definition's choice, at every depth."""
    deep = _nested(value, depth)
    assert _is_plain(deep, 0) is _plain_by_definition(deep, 0)
    assert _is_plain(value, 0) is _plain_by_definition(value, 0)
    if not _plain_by_definition(deep, 0):
        assert encode(deep)[:1] == b"t"
