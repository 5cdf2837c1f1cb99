"""The value digest: one injective, type-tagged encoding of the values a run records.

Every ``args`` and ``result`` digest in the evidence is :func:`value_digest` of a value,
``"sha256:" + SHA-256(DOMAIN || encoding)``. The encoding is specified here and nowhere
else; it is a function of the value (never of the path that computed it) and injective
over the canonical domain:

* **Plain JSON** — ``None``, ``bool``, ``int`` within ±(2**63-1), finite ``float``, ``str``
  (valid Unicode), ``list`` and ``dict`` with ``str`` keys, all of these *exact* types —
  is encoded as ``b"j"`` + compact JSON with sorted keys (orjson). JSON keeps ``1`` and
  ``1.0`` apart and parses back to the same value, so this part is injective.
* **Everything else canonical** is encoded as ``b"t"`` + the JSON of a *tagged tree*, each
  node ``[tag, ...]``:

  ======================  ================================================================
  ``["n"]``               ``None``
  ``["b", true]``         ``bool``
  ``["i", "123"]``        ``int`` (decimal, any size)
  ``["f", "0x1.8p+1"]``   ``float`` by ``float.hex``: ``nan``, ``inf``, ``-inf``, ``-0.0``
                          are all distinct
  ``["s", "text"]``       ``str``; ``["u", hex]`` for text with lone surrogates (UTF-8
                          with ``surrogatepass``)
  ``["y", hex]``          ``bytes``; ``["Y", hex]`` ``bytearray``
  ``["l", [...]]``        ``list``; ``["t", [...]]`` ``tuple``
  ``["d", [[k, v]...]]``  ``dict``, any canonical hashable keys, entries sorted by the bytes
                          of their encoding
  ``["S", [...]]``        ``set``; ``["F", [...]]`` ``frozenset`` (sorted likewise)
  ``["e", cls, name]``    an :class:`enum.Enum` member
  ``["m", cls, [...]]``   a pydantic model by its fields (and extras), sorted by name;
                          ``["c", cls, [...]]`` a dataclass by its fields
  ``["x", cls, text]``    ``Decimal``, ``UUID``, ``datetime``/``date``/``time``/
                          ``timedelta``, pure paths, by their exact text form
  ``["g", cls, text]``    an object whose class declares its canonical form:
                          ``__tenure_canonical__(self) -> str`` (an identity handle such
                          as an ``@agent`` or ``@tool``, passed to the body as itself)
  ======================  ================================================================

  ``cls`` is ``module.qualname``. Subclasses of ``int``/``float``/``str``/``bytes`` take
  this tagged form with their exact base value (what they *hold*, whatever their methods
  say); subclasses of ``dict``/``list``/``tuple`` that of the base (named tuples ``"c"``).
* **Anything else** is *opaque*: ``["o", cls, repr]`` (``"<repr failed: E>"`` when the repr
  raises). The tag keeps opaque values apart from every canonical one, but two opaque
  values of one type with the same ``repr`` share a digest: that is the one place the
  digest is not injective, and why governed arguments must be canonical (see
  :mod:`._snapshot`). A value nested deeper than :data:`MAX_DEPTH` (or cyclic) is opaque.

:func:`value_digest` never raises: a result that cannot be represented still gets a digest,
so a started step always gets its end record.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import hashlib
import pathlib
import uuid
from typing import Any, Final

import orjson
from pydantic import BaseModel

__all__ = [
    "DOMAIN",
    "MAX_DEPTH",
    "Frozen",
    "declared_form",
    "encode",
    "qualified_name",
    "value_digest",
]

#: Prefix of every hashed encoding (versioned: the v1 digests were not type-tagged).
DOMAIN: Final = b"tenure.value.v2\n"
#: Containers nested deeper than this are encoded as opaque (and refused as arguments).
MAX_DEPTH: Final = 64

_I64: Final = 2**63 - 1
_SORTED: Final = orjson.OPT_SORT_KEYS
_INF = float("inf")

#: exact immutable types with a text form, by type -> (tag class name, text)
TEXT_FORMS: Final[dict[type, Any]] = {
    decimal.Decimal: str,
    uuid.UUID: str,
    datetime.datetime: lambda v: f"{v.isoformat()}|{v.tzinfo!r}",
    datetime.date: datetime.date.isoformat,
    datetime.time: lambda v: f"{v.isoformat()}|{v.tzinfo!r}",
    datetime.timedelta: repr,
    pathlib.PurePosixPath: str,
    pathlib.PureWindowsPath: str,
    pathlib.PosixPath: str,
    pathlib.WindowsPath: str,
}


class Frozen:
    """A snapshot node for a container the body must get a fresh copy of.

    Made by :mod:`._snapshot`; encoded exactly like the value it was made from.
    """

    __slots__ = ("cls", "kind", "value")

    def __init__(self, kind: str, cls: type, value: Any) -> None:
        #: "set", "frozenset", "bytearray", "model", "dataclass", "namedtuple" or "opaque"
        self.kind = kind
        self.cls = cls
        #: frozenset / bytes / (fields, fields_set) / fields / tuple of items
        self.value = value


def qualified_name(cls: type) -> str:
    """``module.qualname`` of a class."""
    return f"{cls.__module__}.{cls.__qualname__}"


def value_digest(value: Any) -> str:
    """``"sha256:<hex>"`` of :func:`encode` ``(value)``; never raises."""
    return "sha256:" + hashlib.sha256(DOMAIN + encode(value)).hexdigest()


def encode(value: Any) -> bytes:
    """The canonical encoding of ``value`` (see the module docstring); never raises."""
    if _is_plain(value, 0):
        try:
            return b"j" + orjson.dumps(value, option=_SORTED)
        except orjson.JSONEncodeError:  # a lone surrogate: not plain after all
            pass
    return b"t" + orjson.dumps(_tree(value, 0))


def _is_plain(v: Any, depth: int) -> bool:
    t = type(v)
    if t is str or t is bool or v is None:
        return True
    if t is int:
        return bool(-_I64 <= v <= _I64)
    if t is float:
        return bool(-_INF < v < _INF)
    if depth >= MAX_DEPTH:
        return False
    # Loops, not all(genexpr), and str items checked inline: this runs for the arguments and
    # the result of every governed step (a generator per container cost more than the rest).
    d = depth + 1
    if t is list:
        for x in v:  # noqa: SIM110 - a loop, not all(genexpr): the hot path
            if type(x) is not str and not _is_plain(x, d):
                return False
        return True
    if t is dict:
        for k, x in v.items():
            if type(k) is not str or (type(x) is not str and not _is_plain(x, d)):
                return False
        return True
    return False


def _text(s: str) -> list[Any]:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return ["u", s.encode("utf-8", "surrogatepass").hex()]
    return ["s", s]


def _sorted_items(trees: list[Any]) -> list[Any]:
    return [t for _, t in sorted((orjson.dumps(t), t) for t in trees)]


def _tree(v: Any, depth: int) -> list[Any]:
    t = type(v)
    if v is None:
        return ["n"]
    if t is bool:
        return ["b", v]
    if isinstance(v, enum.Enum):
        return ["e", qualified_name(t), _text(v.name)]
    if isinstance(v, bool):  # unreachable (bool is final); keeps the int branch exact
        return ["b", bool(v)]
    if isinstance(v, int):
        return ["i", str(int.__int__(v))]
    if isinstance(v, float):
        return ["f", float.hex(float.__float__(v))]
    if isinstance(v, str):
        return _text(str.__str__(v))
    if isinstance(v, bytes):
        return ["y", bytes.__bytes__(v).hex()]
    if t is bytearray:
        return ["Y", v.hex()]
    form = TEXT_FORMS.get(t)
    if form is not None:
        return ["x", qualified_name(t), form(v)]
    declared = declared_form(v)
    if declared is not None:
        return ["g", qualified_name(t), _text(declared)]
    if depth >= MAX_DEPTH:
        return _opaque(v, f"nested deeper than {MAX_DEPTH}")
    d = depth + 1
    if t is Frozen:
        return _frozen_tree(v, d)
    try:
        if isinstance(v, dict):
            pairs = [[_tree(k, d), _tree(x, d)] for k, x in dict.items(v)]
            return ["d", _sorted_items(pairs)]
        if isinstance(v, list):
            return ["l", [_tree(x, d) for x in list.__iter__(v)]]
        if isinstance(v, tuple):
            if hasattr(t, "_fields"):  # a named tuple: a record of named fields
                fields = namedtuple_fields(v)
                return ["c", qualified_name(t), _field_trees(fields, d)]
            return ["t", [_tree(x, d) for x in tuple.__iter__(v)]]
        if isinstance(v, set | frozenset):
            tag = "F" if isinstance(v, frozenset) else "S"
            return [tag, _sorted_items([_tree(x, d) for x in v])]
        if isinstance(v, BaseModel):
            return ["m", qualified_name(t), _field_trees(model_fields(v), d)]
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return ["c", qualified_name(t), _field_trees(dataclass_fields(v), d)]
    except RecursionError:
        return _opaque(v, "nested too deeply")
    return _opaque(v, None)


def _frozen_tree(node: Frozen, depth: int) -> list[Any]:
    kind, cls, value = node.kind, node.cls, node.value
    if kind == "opaque":
        return _opaque(value, None)
    if kind == "set" or kind == "frozenset":
        return ["S" if kind == "set" else "F", _sorted_items([_tree(x, depth) for x in value])]
    if kind == "bytearray":
        return ["Y", value.hex()]
    if kind == "model":
        return ["m", qualified_name(cls), _field_trees(value[0], depth)]
    if kind == "namedtuple":
        fields = dict(zip(cls._fields, value, strict=True))  # type: ignore[attr-defined]
        return ["c", qualified_name(cls), _field_trees(fields, depth)]
    return ["c", qualified_name(cls), _field_trees(value, depth)]


def _field_trees(fields: dict[str, Any], depth: int) -> list[Any]:
    return [[k, _tree(x, depth)] for k, x in sorted(fields.items())]


def namedtuple_fields(v: tuple[Any, ...]) -> dict[str, Any]:
    """A named tuple's fields by name (read with ``tuple``'s own iteration)."""
    return dict(zip(type(v)._fields, tuple.__iter__(v), strict=True))  # type: ignore[attr-defined]


def declared_form(v: Any) -> str | None:
    """``type(v).__tenure_canonical__(v)`` when the class declares one (a ``str``), else None."""
    method = getattr(type(v), "__tenure_canonical__", None)
    if method is None:
        return None
    try:
        form = method(v)
    except Exception:  # a declared form that fails: not canonical after all
        return None
    return str.__str__(form) if isinstance(form, str) else None


def model_fields(v: BaseModel) -> dict[str, Any]:
    """A pydantic model's field values (and extras), read from its instance dict.

    Read with ``object.__getattribute__``: a model class that overrides attribute access or
    ``model_dump`` cannot make the encoding see other values than it holds.
    """
    data = object.__getattribute__(v, "__dict__")
    out = {name: data[name] for name in type(v).model_fields if name in data}
    extra = object.__getattribute__(v, "__pydantic_extra__")
    if extra:
        out.update(extra)
    return out


def dataclass_fields(v: Any) -> dict[str, Any]:
    """A dataclass instance's field values (read past any attribute-access override)."""
    return {f.name: object.__getattribute__(v, f.name) for f in dataclasses.fields(type(v))}


def _opaque(v: Any, why: str | None) -> list[Any]:
    if why is None:
        try:
            why = repr(v)
        except Exception as exc:  # a value whose repr raises still gets a digest
            why = f"<repr failed: {type(exc).__name__}>"
        if not isinstance(why, str):
            why = "<repr is not a str>"
    return ["o", qualified_name(type(v)), _text(str.__str__(why))]
