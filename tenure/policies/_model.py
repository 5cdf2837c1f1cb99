"""The policy file format as validated models, and the values the engine hands out.

Invariants:

* Every model is strict and closed (``extra="forbid"``, strict types): an unknown key, a
  value of the wrong type (``"5"`` for a number, ``true`` for an integer) or an unknown
  effect/action/operator is a load error, never a rule that silently never matches.
* Every glob is checked when it is validated (:func:`check_glob`); an unbalanced ``[`` or an
  empty pattern is refused. Every ``matches`` regex is compiled with RE2 when it is
  validated (:mod:`._regex`): one RE2 refuses (backreferences, lookaround) is a load error.
* Every number a policy may hold fits RFC 8785 (finite floats, integers within ±(2**53-1)),
  so the canonical digest of a validated set can always be computed.
* An empty list (``principals = []``) matches nothing and is refused as a likely mistake.
* :class:`PolicyError` is the only exception the loader raises for untrusted input; it names
  the file, the line (``None`` when unknown) and the reason: ``str(err) == "file:line: reason"``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StrictInt,
    StrictStr,
    field_validator,
)

from .._errors import TenureError
from .._util import final
from ..crypto import parse_key_text
from ._regex import compile_regex

__all__ = [
    "ACTIONS",
    "EFFECTS",
    "OPERATORS",
    "Budgets",
    "Condition",
    "Decision",
    "Effect",
    "PolicyDocument",
    "PolicyError",
    "Rule",
    "check_glob",
    "parse_rate",
]

Effect = Literal["allow", "deny", "require_approval"]
Action = Literal["invoke_agent", "execute_tool", "call_model"]

#: the effects a rule may have, in the order of precedence they lose to (deny wins)
EFFECTS: tuple[str, ...] = ("allow", "deny", "require_approval")
#: the actions a rule may name: run an agent, call a tool, send a request to a model
#: (its target is the model name, e.g. ``gpt-4.1-mini``)
ACTIONS: tuple[str, ...] = ("invoke_agent", "execute_tool", "call_model")
#: the condition operators, in file spelling
OPERATORS: tuple[str, ...] = ("eq", "ne", "in", "not_in", "gt", "ge", "lt", "le", "matches")

_MAX_SAFE_INT = 2**53 - 1
_RATE = re.compile(r"([1-9][0-9]{0,8})/([smh])")
_RATE_UNITS = {"s": 1, "m": 60, "h": 3600}
_ARG_KEY = re.compile(r"args\.([A-Za-z_][A-Za-z0-9_]*)")
_RULE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@/-]{0,127}")


class PolicyError(TenureError, ValueError):
    """A policy file (or folder) that cannot be loaded: ``file:line: reason``.

    Attributes:
        path: the file (or folder) at fault, as given (``"<text>"`` for in-memory sources).
        line: the 1-based line of the offending key, or ``None`` when no line applies.
        reason: what is wrong, with the expected and the actual value.
    """

    def __init__(self, path: str, line: int | None, reason: str) -> None:
        self.path = path
        self.line = line
        self.reason = reason
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {reason}")

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.path, self.line, self.reason))


@final
@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one policy decision.

    ``rule_id`` names the rule that decided, or ``"default-deny"`` when nothing matched.
    """

    effect: Effect
    rule_id: str
    reason: str

    @property
    def allowed(self) -> bool:
        """True only for ``effect == "allow"`` (``require_approval`` is not yet allowed)."""
        return self.effect == "allow"


# ---------------------------------------------------------------------------------------------
# scalar checks


def check_glob(pattern: str) -> str:
    """Return ``pattern`` if it is a well-formed glob, else raise ``ValueError``.

    Globs are ``fnmatch``-style and case-sensitive: ``*``, ``?``, ``[seq]``, ``[!seq]``.
    ``fnmatch`` itself treats an unbalanced ``[`` as a literal, which would make a typo a
    rule that never matches; here it is an error.
    """
    if not pattern:
        raise ValueError("empty glob pattern matches nothing")
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "[":
            j = i + 1
            if j < n and pattern[j] == "!":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 1
            if j >= n:
                raise ValueError(f"malformed glob {pattern!r}: unbalanced '[' at position {i}")
            i = j + 1
            continue
        i += 1
    return pattern


def _check_number(value: float) -> float:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {value!r}")
    if isinstance(value, int) and abs(value) > _MAX_SAFE_INT:
        raise ValueError(f"integer {value} is outside ±(2**53-1)")
    return value


def parse_rate(text: str) -> tuple[int, int]:
    """``"20/s"`` → ``(20, 1)``; ``"N/m"``, ``"N/h"``; N a positive integer, else ``ValueError``."""
    m = _RATE.fullmatch(text)
    if m is None:
        raise ValueError(
            f'malformed rate limit {text!r}: expected "N/s", "N/m" or "N/h" '
            "with N a positive integer"
        )
    return int(m.group(1)), _RATE_UNITS[m.group(2)]


def _check_rate(text: str) -> str:
    parse_rate(text)
    return text


def _describe(value: object) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def _scalar(value: object) -> object:
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int | float):
        return _check_number(value)
    raise ValueError(f"expected a string, number or boolean, got {_describe(value)}")


def _ordered(value: object) -> object:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _check_number(value)
    raise ValueError(f"expected a number or a string, got {_describe(value)}")


def _approver_key(value: str) -> str:
    parse_key_text(value)  # ValueError names the fault; the loader adds file and line
    return value


def _approver_name(value: str) -> str:
    if not _RULE_ID.fullmatch(value):
        raise ValueError(
            f"approver name {value!r} must be 1-128 characters of letters, digits and "
            "'_.:@/-', starting with a letter or digit"
        )
    return value


def _positive(value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        _check_number(value)
        if value > 0:
            return value
        raise ValueError(f"expected a positive number, got {value!r}")
    raise ValueError(f"expected a positive number, got {_describe(value)}")


Glob = Annotated[StrictStr, AfterValidator(check_glob)]
ApproverKey = Annotated[StrictStr, AfterValidator(_approver_key)]
ApproverName = Annotated[StrictStr, AfterValidator(_approver_name)]
RateText = Annotated[StrictStr, AfterValidator(_check_rate)]
Scalar = Annotated[Any, PlainValidator(_scalar)]
Ordered = Annotated[Any, PlainValidator(_ordered)]
PositiveNumber = Annotated[Any, PlainValidator(_positive)]
PositiveInt = Annotated[StrictInt, Field(gt=0, le=_MAX_SAFE_INT)]


def _nonempty(values: list[Any]) -> list[Any]:
    if not values:
        raise ValueError("an empty list matches nothing (omit the key to match any)")
    return values


def _homogeneous(values: list[Any]) -> list[Any]:
    _nonempty(values)
    kinds = {kind_of(v) for v in values}
    if len(kinds) > 1:
        raise ValueError(f"list mixes value types ({', '.join(sorted(kinds))})")
    return values


def kind_of(value: object) -> str:
    """The comparison kind of a value: ``bool``, ``number``, ``str`` or the type name.

    Only the exact types count: an ``int`` or ``str`` subclass (whose comparisons may lie) is
    its own kind, which no condition compares with (runtime arguments reach the engine
    already converted to exact types, see ``tenure.crypto._snapshot``).
    """
    t = type(value)
    if t is bool:
        return "bool"
    if t is int or t is float:
        return "number"
    if t is str:
        return "str"
    return t.__name__


_CLOSED = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=False)


@final
class Condition(BaseModel):
    """Operators on one argument; all the operators given must hold (AND)."""

    model_config = _CLOSED

    eq: Scalar | None = None
    ne: Scalar | None = None
    in_: Annotated[list[Scalar], AfterValidator(_homogeneous)] | None = Field(
        default=None, alias="in"
    )
    not_in: Annotated[list[Scalar], AfterValidator(_homogeneous)] | None = None
    gt: Ordered | None = None
    ge: Ordered | None = None
    lt: Ordered | None = None
    le: Ordered | None = None
    matches: StrictStr | None = None

    @field_validator("matches")
    @classmethod
    def _regex_compiles(cls, value: str | None) -> str | None:
        if value is not None:
            compile_regex(value)
        return value

    def operators(self) -> list[tuple[str, Any]]:
        """``[(operator, operand), ...]`` in file spelling, in :data:`OPERATORS` order."""
        out = []
        for op in OPERATORS:
            value = getattr(self, "in_" if op == "in" else op)
            if value is not None:
                out.append((op, value))
        return out


@final
class Rule(BaseModel):
    """One ``[[rules]]`` entry. Omitted selectors match anything."""

    model_config = _CLOSED

    id: StrictStr
    effect: Effect
    description: StrictStr | None = None
    principals: Annotated[list[Glob], AfterValidator(_nonempty)] | None = None
    actions: Annotated[list[Action], AfterValidator(_nonempty)] | None = None
    targets: Annotated[list[Glob], AfterValidator(_nonempty)] | None = None
    callers: Annotated[list[Glob], AfterValidator(_nonempty)] | None = None
    when: dict[str, Condition] | None = None
    #: for ``require_approval``: who may answer (names from ``[approvers]``); omitted =
    #: every declared approver
    approvers: Annotated[list[ApproverName], AfterValidator(_nonempty)] | None = None

    @field_validator("id")
    @classmethod
    def _id_shape(cls, value: str) -> str:
        if not _RULE_ID.fullmatch(value) or value == "default-deny":
            raise ValueError(
                f"rule id {value!r} must be 1-128 characters of letters, digits and "
                "'_.:@/-', start with a letter or digit, and not be 'default-deny'"
            )
        return value

    @field_validator("when")
    @classmethod
    def _when_shape(cls, value: dict[str, Condition] | None) -> dict[str, Condition] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("empty 'when' table (omit it for no conditions)")
        for key, cond in value.items():
            if not _ARG_KEY.fullmatch(key):
                raise ValueError(f'condition key {key!r} must be "args.<parameter name>"')
            if not cond.operators():
                raise ValueError(
                    f"condition on {key} has no operator (expected one of {', '.join(OPERATORS)})"
                )
        return value


@final
class Budgets(BaseModel):
    """Per-run limits from ``[budgets]``; ``None`` means unlimited. All positive."""

    model_config = _CLOSED

    max_steps: PositiveInt | None = None
    max_tool_calls: PositiveInt | None = None
    max_depth: PositiveInt | None = None
    max_concurrency: PositiveInt | None = None
    max_wall_seconds: PositiveNumber | None = None
    max_tokens: PositiveInt | None = None
    max_cost: PositiveNumber | None = None


class PolicyDocument(BaseModel):
    """One policy file."""

    model_config = _CLOSED

    version: StrictInt
    default: StrictStr = "deny"
    rules: list[Rule] = Field(default_factory=list)
    budgets: Budgets = Field(default_factory=Budgets)
    rate_limits: dict[Glob, RateText] = Field(default_factory=dict)
    #: approver name -> Ed25519 public key (``"ed25519:<base64>"``)
    approvers: dict[ApproverName, ApproverKey] = Field(default_factory=dict)

    @field_validator("version")
    @classmethod
    def _version_one(cls, value: int) -> int:
        if value != 1:
            raise ValueError(f"expected 1, got {value}")
        return value

    @field_validator("default")
    @classmethod
    def _default_deny(cls, value: str) -> str:
        if value != "deny":
            raise ValueError(f'expected "deny" (the only accepted value), got {value!r}')
        return value
