"""Canonical snapshots of call arguments: what a governed step is decided, recorded and run on.

A governed call's arguments are converted once, before the decision, into a
:class:`Snapshot`. The policy decides on it, the evidence digests it
(:func:`~tenure.crypto._values.value_digest` of ``[args, kwargs]``), and the body receives
:meth:`Snapshot.thaw` — fresh objects built from it, sharing no mutable container with the
caller. So code that edits an argument after the decision (a sibling branch changing an
approved invoice) changes nothing that runs, and a value cannot show the policy one face
and the tool another.

What a snapshot holds (the canonical domain; anything else is refused with
:class:`NotCanonical`, naming the argument path, the type and what is accepted):

* exact ``None``, ``bool``, ``int``, ``float`` (non-finite kept: the policy engine never
  lets them satisfy a condition), ``str``, ``bytes``; subclasses of ``int``/``float``/
  ``str``/``bytes`` by their exact base value (an ``int`` whose comparisons lie becomes the
  plain ``int`` it holds);
* ``list``, ``tuple``, ``dict`` (keys canonical and hashable), ``set``, ``frozenset``,
  ``bytearray``; subclasses of ``dict``/``list``/``tuple`` as the exact base type, named
  tuples as named tuples;
* objects whose class declares a canonical form (``__tenure_canonical__``, e.g. an
  ``@agent`` or ``@tool`` handed to an agent), as themselves;
* :class:`enum.Enum` members, the immutable values of
  :data:`~tenure.crypto._values.TEXT_FORMS` (``Decimal``, ``UUID``, dates and times, pure
  paths) as themselves;
* pydantic models and dataclasses by their fields (read past any attribute-access override),
  rebuilt for the body without running their validators or ``__init__``.

Containers nested deeper than :data:`~tenure.crypto._values.MAX_DEPTH` (or cyclic) are
refused.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, Final

from pydantic import BaseModel

from .._util import final
from ._values import (
    MAX_DEPTH,
    TEXT_FORMS,
    Frozen,
    dataclass_fields,
    declared_form,
    model_fields,
    qualified_name,
)

__all__ = ["ACCEPTED", "NotCanonical", "Snapshot", "decision_view", "snapshot_call"]

ACCEPTED: Final = (
    "JSON data (None, bool, int, float, str, list, dict), bytes, bytearray, tuple, set, "
    "frozenset, an Enum member, Decimal, UUID, a date or time, a pure path, a pydantic model, "
    "a dataclass, an @agent or @tool"
)
_ATOMS: Final = frozenset({type(None), bool, int, float, str, bytes})


class NotCanonical(ValueError):
    """An argument outside the canonical domain (``path`` names it, e.g. ``args.invoice.to``)."""

    def __init__(self, path: str, value: object, why: str) -> None:
        self.path = path
        self.type_name = qualified_name(type(value))
        super().__init__(f"argument {path} ({self.type_name}) {why}; accepted: {ACCEPTED}")


class _Refused(Exception):
    # Raised deep in a value; each container on the way out adds its step to the path, so
    # that no path string is built unless something is refused.
    def __init__(self, value: object, why: str) -> None:
        self.value = value
        self.why = why
        self.steps: list[str] = []


@final
class Snapshot:
    """The canonical arguments of one call (positional and keyword), frozen at decision time."""

    __slots__ = ("args", "kwargs", "shallow")

    def __init__(self, args: tuple[Any, ...], kwargs: dict[str, Any], shallow: bool) -> None:
        self.args = args
        self.kwargs = kwargs
        #: every argument is an immutable scalar: thawing is one dict copy
        self.shallow = shallow

    def thaw(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Fresh arguments for the body (no container shared with the caller or the snapshot)."""
        if self.shallow:
            return self.args, dict(self.kwargs)
        return tuple(_thaw(a) for a in self.args), {k: _thaw(v) for k, v in self.kwargs.items()}

    def value(self) -> list[Any]:
        """``[list(args), kwargs]``: what the evidence digests (never handed to code)."""
        return [list(self.args), self.kwargs]


def snapshot_call(
    args: tuple[Any, ...], kwargs: dict[str, Any], *, opaque: bool = False
) -> Snapshot:
    """Snapshot a call's arguments; raise :class:`NotCanonical` for one outside the domain.

    With ``opaque=True`` (agent invocations: an orchestrating agent may be handed an event,
    a client, a callback) an argument outside the domain is kept as an :class:`Opaque`
    node instead: passed to the body as itself, digested by type and ``repr``, and never
    compared by a policy condition (one that names it denies).
    """
    shallow = True
    out_args: list[Any] = []
    out_kwargs: dict[str, Any] = {}
    for i, a in enumerate(args):
        if type(a) in _ATOMS:
            out_args.append(a)
        else:
            shallow = False
            out_args.append(_top(a, f"args[{i}]", opaque))
    for k, a in kwargs.items():
        if type(a) in _ATOMS:
            out_kwargs[k] = a
        else:
            shallow = False
            out_kwargs[k] = _top(a, f"args.{k}", opaque)
    return Snapshot(tuple(out_args), out_kwargs, shallow)


def _top(value: Any, name: str, opaque: bool) -> Any:
    try:
        return _freeze(value, 0)
    except _Refused as r:
        if opaque:
            return Frozen("opaque", type(value), value)
        raise NotCanonical(name + "".join(reversed(r.steps)), r.value, r.why) from None


def _freeze(v: Any, depth: int) -> Any:
    t = type(v)
    if t in _ATOMS or t in TEXT_FORMS or isinstance(v, enum.Enum):
        return v
    if isinstance(v, bool):  # bool is final; here for the type checker's int narrowing
        return bool(v)
    if isinstance(v, int):
        return int.__int__(v)
    if isinstance(v, float):
        return float.__float__(v)
    if isinstance(v, str):
        return str.__str__(v)
    if isinstance(v, bytes):
        return bytes.__bytes__(v)
    if depth >= MAX_DEPTH:
        raise _Refused(v, f"is nested deeper than {MAX_DEPTH} levels (or cyclic)")
    d = depth + 1
    if isinstance(v, dict):
        out = {}
        for k, x in dict.items(v):
            try:
                key = k if type(k) in _ATOMS else _freeze(k, d)
                hash(key)
                out[key] = x if type(x) in _ATOMS else _freeze(x, d)
            except TypeError:
                r = _Refused(k, "is an unhashable dict key")
                r.steps.append(f"[{k!r:.40}]")
                raise r from None
            except _Refused as r:
                r.steps.append(f"[{k!r:.40}]")
                raise
        return out
    if isinstance(v, list | tuple):
        items = []
        for i, x in enumerate(list.__iter__(v) if isinstance(v, list) else tuple.__iter__(v)):
            try:
                items.append(x if type(x) in _ATOMS else _freeze(x, d))
            except _Refused as r:
                r.steps.append(f"[{i}]")
                raise
        if isinstance(v, list):
            return items
        if hasattr(t, "_fields") and t is not tuple:
            return Frozen("namedtuple", t, tuple(items))
        return tuple(items)
    if isinstance(v, set | frozenset):
        kind = "frozenset" if isinstance(v, frozenset) else "set"
        try:
            return Frozen(kind, t, frozenset(_freeze(x, d) for x in v))
        except TypeError:
            raise _Refused(v, "holds an unhashable element") from None
        except _Refused as r:
            r.steps.append("{}")
            raise
    if t is bytearray:
        return Frozen("bytearray", t, bytes(v))
    if isinstance(v, BaseModel):
        fields = _freeze_fields(model_fields(v), d)
        fields_set = object.__getattribute__(v, "__pydantic_fields_set__")
        return Frozen("model", t, (fields, frozenset(fields_set)))
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return Frozen("dataclass", t, _freeze_fields(dataclass_fields(v), d))
    if declared_form(v) is not None:
        return v
    raise _Refused(v, "has no canonical form")


def _freeze_fields(fields: dict[str, Any], depth: int) -> dict[str, Any]:
    out = {}
    for k, x in fields.items():
        try:
            out[k] = _freeze(x, depth)
        except _Refused as r:
            r.steps.append(f".{k}")
            raise
    return out


def _thaw(v: Any) -> Any:
    t = type(v)
    if t is dict:
        return {k: _thaw(x) for k, x in v.items()}
    if t is list:
        return [_thaw(x) for x in v]
    if t is tuple:
        return tuple(_thaw(x) for x in v)
    if t is not Frozen:
        return v
    kind, cls, value = v.kind, v.cls, v.value
    if kind == "set":
        return {_thaw(x) for x in value}
    if kind == "frozenset":
        return frozenset(_thaw(x) for x in value)
    if kind == "bytearray":
        return bytearray(value)
    if kind == "opaque":
        return value
    if kind == "namedtuple":
        return tuple.__new__(cls, [_thaw(x) for x in value])
    if kind == "model":
        fields, fields_set = value
        return cls.model_construct(set(fields_set), **{k: _thaw(x) for k, x in fields.items()})
    obj = object.__new__(cls)
    for k, x in value.items():
        object.__setattr__(obj, k, _thaw(x))
    return obj


def decision_view(v: Any) -> Any:
    """What a policy condition compares for a snapshot value: scalars as they are, an enum
    member by its value, containers as themselves (never comparable with a scalar)."""
    if isinstance(v, enum.Enum):
        try:
            return _freeze(v.value, 0)
        except _Refused:
            return v
    if type(v) is Frozen and v.kind == "opaque":
        return v.value  # never an exact scalar: no condition compares it
    return v
