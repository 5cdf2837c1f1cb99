"""Read policy files into validated documents, with ``file:line: reason`` errors.

Invariants:

* The only exception that leaves this module for bad input is :class:`PolicyError`: bytes
  that are not UTF-8, TOML syntax errors (with ``tomllib``'s line), schema errors (pydantic
  locations mapped back to lines by :mod:`._locate`), cross-rule errors (duplicate ids,
  ``callers`` on agent invocations), and cross-file conflicts.
* A folder is the sorted set of its ``*.toml`` files (not recursive); rule ids are unique
  across the folder, and a budget or rate limit given in two files must agree.
* A missing path, an unreadable file or a folder without ``*.toml`` files is a
  :class:`PolicyError` naming the path; so is a file that is not a regular file (a FIFO, a
  device) or is larger than :data:`MAX_POLICY_BYTES`, which is never read. Symlinks are
  followed (mounted configuration is often one).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from pydantic import ValidationError

from .._files import read_regular_file
from ._locate import key_lines, line_of
from ._model import OPERATORS, Budgets, PolicyDocument, PolicyError, Rule

__all__ = ["MAX_POLICY_BYTES", "LoadedFile", "Merged", "load_path", "load_text", "merge"]

#: The largest policy file read (a 5,000-rule file is about 1 MB).
MAX_POLICY_BYTES: Final = 64 << 20

_RULES_AT_ONCE = 64  # more rules than this are validated one by one (see _validate)
_TOML_POS = re.compile(r"\s*\(at line (\d+), column \d+\)$")
_TOML_END = re.compile(r"\s*\(at end of document\)$")

_KEYS_TOP = tuple(PolicyDocument.model_fields)
_KEYS_RULE = tuple(Rule.model_fields)
_KEYS_BUDGETS = tuple(Budgets.model_fields)
_TYPE_NAMES = {
    "int_type": "an integer",
    "float_type": "a number",
    "string_type": "a string",
    "bool_type": "a boolean",
    "list_type": "an array",
    "dict_type": "a table",
    "model_type": "a table",
    "model_attributes_type": "a table",
}


@dataclass(frozen=True)
class LoadedFile:
    """One validated file and the line of every key in it."""

    path: str
    doc: PolicyDocument
    lines: dict[tuple[str | int, ...], int] = field(repr=False)

    def line(self, *loc: str | int) -> int | None:
        """The line of ``loc`` (or its nearest enclosing key) in this file."""
        return line_of(self.lines, loc)


@dataclass(frozen=True)
class Merged:
    """The merged content of one or more files."""

    files: tuple[LoadedFile, ...]
    rules: tuple[Rule, ...]
    origins: dict[str, tuple[str, int | None]]  # rule id -> (file, line)
    budgets: Budgets
    rate_limits: dict[str, str]
    approvers: dict[str, str] = field(default_factory=dict)  # name -> "ed25519:<base64>"


def _fmt(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _describe(loc: tuple[str | int, ...]) -> str:
    parts: list[str] = []
    for p in loc:
        if isinstance(p, int):
            parts[-1:] = [f"{parts[-1]}[{p}]"] if parts else [f"[{p}]"]
        elif p == "[key]":
            continue
        elif "." in p or not p:
            parts.append(f'"{p}"')
        else:
            parts.append(p)
    return ".".join(parts)


def _reason(err: Any, data: Any) -> tuple[tuple[str | int, ...], str]:
    """Translate one pydantic error into (location, message with expected and actual)."""
    loc: tuple[str | int, ...] = tuple(err["loc"])
    kind: str = err["type"]
    value = err.get("input")
    rule_prefix = ""
    inner = loc
    if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
        inner = loc[2:]
        rules = data.get("rules") if isinstance(data, dict) else None
        rid = None
        if isinstance(rules, list) and loc[1] < len(rules) and isinstance(rules[loc[1]], dict):
            rid = rules[loc[1]].get("id")
        rule_prefix = f"rule {rid!r}: " if isinstance(rid, str) else f"rules[{loc[1]}]: "
    where = _describe(inner)
    at = f"{where}: " if where else ""
    if kind == "extra_forbidden":
        key = str(loc[-1])
        if loc[:1] == ("rules",) and len(loc) == 5 and loc[2] == "when":
            return loc, (
                f"{rule_prefix}unknown operator {key!r} in condition on {loc[3]} "
                f"(expected one of {', '.join(OPERATORS)})"
            )
        if len(loc) == 1:
            known = _KEYS_TOP
            table = "top level"
        elif loc[0] == "rules" and len(loc) == 3:
            known = _KEYS_RULE
            table = "[[rules]]"
        elif loc[0] == "budgets" and len(loc) == 2:
            known = _KEYS_BUDGETS
            table = "[budgets]"
        else:
            known, table = (), _describe(loc[:-1])
        expected = f" (expected one of {', '.join(known)})" if known else ""
        return loc, f"{rule_prefix}unknown key {key!r} in {table}{expected}"
    if kind == "missing":
        return loc, f"{rule_prefix}missing required key {where!r}"
    if kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        what = {"effect": "effect", "actions": "action"}.get(str(inner[0]) if inner else "", "")
        if what:
            return loc, f"{rule_prefix}unknown {what} {_fmt(value)} (expected {expected})"
        return loc, f"{rule_prefix}{at}expected {expected}, got {_fmt(value)}"
    if kind == "value_error":
        msg = str(err.get("ctx", {}).get("error", err["msg"]))
        return loc, f"{rule_prefix}{at}{msg}"
    if kind in _TYPE_NAMES:
        return loc, (
            f"{rule_prefix}{at}expected {_TYPE_NAMES[kind]}, "
            f"got {type(value).__name__} {_fmt(value)}"
        )
    if kind in ("greater_than", "less_than_equal"):
        return loc, f"{rule_prefix}{at}{err['msg'].lower()}, got {_fmt(value)}"
    return loc, f"{rule_prefix}{at}{err['msg']}, got {_fmt(value)}"


def _sort_key(err: Any) -> tuple[int, int]:
    # Among union-branch errors report the most specific one; keep file order otherwise.
    return (0 if err["type"] in ("extra_forbidden", "missing", "value_error") else 1, 0)


def load_text(text: str | bytes, source: str) -> LoadedFile:
    """Parse and validate one document; raise :class:`PolicyError` on any fault."""
    if isinstance(text, bytes):
        raw = text
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PolicyError(
                source,
                raw.count(b"\n", 0, exc.start) + 1,
                f"not valid UTF-8 (byte {raw[exc.start]:#04x} at offset {exc.start})",
            ) from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc.args[0]) if exc.args else str(exc)
        m = _TOML_POS.search(msg)
        line: int | None = None
        if m is not None:
            line = int(m.group(1))
            msg = msg[: m.start()]
        elif (m := _TOML_END.search(msg)) is not None:
            line = text.count("\n") + 1
            msg = msg[: m.start()]
        raise PolicyError(source, line, f"TOML syntax error: {msg}") from exc
    except (RecursionError, MemoryError, ValueError) as exc:
        raise PolicyError(source, None, f"TOML could not be parsed: {type(exc).__name__}") from exc
    lines = key_lines(text)
    try:
        doc = _validate(data)
    except _Invalid as exc:
        errors = exc.errors
        # The first error in document order that is most specific.
        errors.sort(key=lambda e: (line_of(lines, e["loc"]) or 0, *_sort_key(e)))
        loc, reason = _reason(errors[0], data)
        raise PolicyError(source, line_of(lines, loc), reason) from None
    except RecursionError as exc:
        raise PolicyError(source, None, "document is nested too deeply") from exc
    loaded = LoadedFile(source, doc, lines)
    _check_rules(loaded)
    return loaded


class _Invalid(Exception):
    def __init__(self, errors: list[Any]) -> None:
        self.errors = errors


def _validate(data: Any) -> PolicyDocument:
    """The validated document; rules one by one, so that a load in a worker thread lets the
    event loop run between them (one pydantic call over thousands of rules holds the GIL
    for its whole length)."""
    rules = data.get("rules") if isinstance(data, dict) else None
    try:
        if not isinstance(rules, list) or len(rules) <= _RULES_AT_ONCE:
            return PolicyDocument.model_validate(data)
        head = PolicyDocument.model_validate({**data, "rules": []})
    except ValidationError as exc:
        raise _Invalid(exc.errors(include_url=False)) from None
    validated: list[Rule] = []
    errors: list[Any] = []
    for i, rule in enumerate(rules):
        try:
            validated.append(Rule.model_validate(rule))
        except ValidationError as exc:
            errors += [{**e, "loc": ("rules", i, *e["loc"])} for e in exc.errors(include_url=False)]
    if errors:
        raise _Invalid(errors)
    return head.model_copy(update={"rules": validated})


def _check_rules(f: LoadedFile) -> None:
    for i, rule in enumerate(f.doc.rules):
        if rule.callers is not None and (rule.actions is None or "invoke_agent" in rule.actions):
            raise PolicyError(
                f.path,
                f.line("rules", i, "callers"),
                f"rule {rule.id!r}: callers applies only to execute_tool and call_model; "
                'set actions = ["execute_tool"]'
                + (" (actions omitted means all three)" if rule.actions is None else ""),
            )


def _check_approvers(files: list[LoadedFile], approvers: dict[str, Any]) -> None:
    """Every rule's ``approvers`` are declared, and only ``require_approval`` rules name any."""
    for f in files:
        for i, rule in enumerate(f.doc.rules):
            if rule.approvers is None:
                continue
            if rule.effect != "require_approval":
                raise PolicyError(
                    f.path,
                    f.line("rules", i, "approvers"),
                    f'rule {rule.id!r}: approvers apply only to effect = "require_approval"',
                )
            unknown = [name for name in rule.approvers if name not in approvers]
            if unknown:
                declared = ", ".join(sorted(approvers)) or "none"
                raise PolicyError(
                    f.path,
                    f.line("rules", i, "approvers"),
                    f"rule {rule.id!r}: approver(s) {unknown} are not declared in [approvers] "
                    f"(declared: {declared})",
                )


def _merge_limits(
    f: LoadedFile,
    section: str,
    values: dict[str, Any],
    merged: dict[str, Any],
    origin: dict[tuple[str, str], tuple[str, int | None]],
) -> None:
    """Add ``f``'s ``[section]`` to ``merged``; the same key with another value is an error."""
    for key, value in values.items():
        line = f.line(section, key)
        if key in merged and merged[key] != value:
            p, ln = origin[(section, key)]
            raise PolicyError(
                f.path,
                line,
                f"{section}.{key} = {value!r} conflicts with {merged[key]!r} at {p}:{ln}",
            )
        merged.setdefault(key, value)
        origin.setdefault((section, key), (f.path, line))


def merge(files: list[LoadedFile]) -> Merged:
    """Merge validated files in order; duplicate ids and conflicting limits are errors."""
    rules: list[Rule] = []
    origins: dict[str, tuple[str, int | None]] = {}
    budgets: dict[str, Any] = {}
    rates: dict[str, Any] = {}
    approvers: dict[str, Any] = {}
    limit_origin: dict[tuple[str, str], tuple[str, int | None]] = {}
    for f in files:
        for i, rule in enumerate(f.doc.rules):
            line = f.line("rules", i, "id")
            if rule.id in origins:
                first_path, first_line = origins[rule.id]
                raise PolicyError(
                    f.path,
                    line,
                    f"duplicate rule id {rule.id!r} (first defined at {first_path}:{first_line})",
                )
            origins[rule.id] = (f.path, line)
            rules.append(rule)
        _merge_limits(
            f, "budgets", f.doc.budgets.model_dump(exclude_none=True), budgets, limit_origin
        )
        _merge_limits(f, "rate_limits", f.doc.rate_limits, rates, limit_origin)
        _merge_limits(f, "approvers", f.doc.approvers, approvers, limit_origin)
    _check_approvers(files, approvers)
    return Merged(
        files=tuple(files),
        rules=tuple(rules),
        origins=origins,
        budgets=Budgets.model_validate(budgets),
        rate_limits=rates,
        approvers=approvers,
    )


def _read(path: Path) -> bytes:
    # Followed symlinks (mounted configuration is often one), but never a FIFO that would
    # block the load or a device or huge file that would exhaust memory.
    try:
        return read_regular_file(path, MAX_POLICY_BYTES, "a policy file", follow_symlinks=True)
    except OSError as exc:
        reason = f"cannot read policy file: {exc.strerror or exc}"
        raise PolicyError(str(path), None, reason) from exc
    except ValueError as exc:
        raise PolicyError(str(path), None, f"cannot read policy file: {exc}") from exc


def load_path(path: str | Path) -> Merged:
    """Load a ``.toml`` file or a folder of ``*.toml`` files (sorted by name)."""
    p = Path(path)
    try:
        is_dir = p.is_dir()
        exists = is_dir or p.exists()
    except OSError as exc:
        raise PolicyError(str(p), None, f"cannot access policy path: {exc}") from exc
    if not exists:
        raise PolicyError(str(p), None, "no such policy file or folder")
    if is_dir:
        # Every *.toml entry but folders: one that cannot be read (a FIFO in place of a deny
        # file) fails the load instead of being left out of the merged policy.
        paths = sorted(c for c in p.glob("*.toml") if not c.is_dir())
        if not paths:
            raise PolicyError(str(p), None, "folder contains no *.toml policy files")
    else:
        paths = [p]
    return merge([load_text(_read(c), str(c)) for c in paths])
