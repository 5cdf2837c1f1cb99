"""Map a key path in a parsed TOML document back to the line that wrote it.

``tomllib`` returns plain dicts without positions, so error messages would otherwise lose
the ``file:line`` a person needs. :func:`key_lines` scans the text once, tracking table
headers (``[budgets]``, ``[[rules]]`` with its running index, ``[rules.when]``), dotted and
quoted keys, inline tables (``when = { "args.x" = { gt = 1 } }``), multi-line arrays and
multi-line strings, and records the first line of every key path it sees.

Invariants: the scanner never raises (it is only run on text ``tomllib`` accepted, but it
must not turn a good error into a crash either); :func:`line_of` falls back to the nearest
enclosing path it knows, and returns ``None`` only when it knows none.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["key_lines", "line_of"]

Path = tuple[str | int, ...]
_BARE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


def _skip_ws(s: str, i: int) -> int:
    while i < len(s) and s[i] in " \t":
        i += 1
    return i


def _string_end(s: str, i: int) -> int:
    """Index just past the string starting at ``s[i]`` (a quote); ``len(s)`` if unclosed."""
    q = s[i]
    if s.startswith(q * 3, i):
        end = s.find(q * 3, i + 3)
        return len(s) if end < 0 else end + 3
    j = i + 1
    while j < len(s):
        if s[j] == "\\" and q == '"':
            j += 2
            continue
        if s[j] == q:
            return j + 1
        j += 1
    return len(s)


def _unquote(raw: str) -> str:
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'":
        body = raw[1:-1]
        if raw[0] == '"' and "\\" in body:
            try:
                return body.encode("latin-1", "backslashreplace").decode("unicode_escape")
            except UnicodeDecodeError:
                return body
        return body
    return raw


def _parse_key(s: str, i: int) -> tuple[list[str], int]:
    """Parse a (dotted, possibly quoted) key at ``s[i:]``; returns parts and the next index."""
    parts: list[str] = []
    while True:
        i = _skip_ws(s, i)
        if i < len(s) and s[i] in "\"'":
            j = _string_end(s, i)
            parts.append(_unquote(s[i:j]))
            i = j
        else:
            j = i
            while j < len(s) and s[j] in _BARE:
                j += 1
            if j == i:
                return parts, i
            parts.append(s[i:j])
            i = j
        i = _skip_ws(s, i)
        if i < len(s) and s[i] == ".":
            i += 1
            continue
        return parts, i


def _scan_value(s: str, i: int, path: Path, lineno: int, out: dict[Path, int]) -> int:
    """Scan a value from ``s[i]``; record inline-table keys. Returns the open ``[`` depth."""
    stack: list[Path] = []  # inline tables being read
    depth = 0  # array depth at the current inline-table level
    depths: list[int] = []
    expect_key = False
    current = path
    while i < len(s):
        c = s[i]
        if c == "#":
            break
        if c in "\"'" and not expect_key:
            i = _string_end(s, i)
            continue
        if expect_key:
            i = _skip_ws(s, i)
            if i < len(s) and s[i] == "}":
                expect_key = False
                continue
            parts, i = _parse_key(s, i)
            i = _skip_ws(s, i)
            if parts and i < len(s) and s[i] == "=":
                current = (stack[-1] if stack else path) + tuple(parts)
                out.setdefault(current, lineno)
                i += 1
            expect_key = False
            continue
        if c == "{":
            stack.append(current)
            depths.append(depth)
            depth = 0
            expect_key = True
        elif c == "}":
            if stack:
                current = stack.pop()
                depth = depths.pop()
        elif c == "[":
            depth += 1
        elif c == "]":
            depth = max(depth - 1, 0)
        elif c == "," and stack and depth == 0:
            expect_key = True
        i += 1
    return depth if not stack else 0


def key_lines(text: str) -> dict[Path, int]:
    """Every key path (strings and array-of-tables indices) → its first 1-based line."""
    out: dict[Path, int] = {}
    counts: dict[tuple[str, ...], int] = {}
    prefix: Path = ()
    open_string: str | None = None
    array_depth = 0

    def resolve(parts: Sequence[str]) -> Path:
        resolved: list[str | int] = []
        for k in range(len(parts)):
            resolved.append(parts[k])
            n = counts.get(tuple(parts[: k + 1]))
            if n:
                resolved.append(n - 1)
        return tuple(resolved)

    for lineno, line in enumerate(text.split("\n"), start=1):
        if open_string is not None:
            if open_string in line:
                open_string = None
            continue
        if array_depth > 0:
            array_depth += _bracket_delta(line)
            continue
        i = _skip_ws(line, 0)
        if i >= len(line) or line[i] == "#":
            continue
        if line.startswith("[[", i):
            parts, _ = _parse_key(line, i + 2)
            if parts:
                key = tuple(parts)
                counts[key] = counts.get(key, 0) + 1
                prefix = resolve(parts)
                out.setdefault(prefix, lineno)
                out.setdefault(prefix[:-1], lineno)
            continue
        if line[i] == "[":
            parts, _ = _parse_key(line, i + 1)
            if parts:
                prefix = resolve(parts)
                out.setdefault(prefix, lineno)
            continue
        parts, j = _parse_key(line, i)
        j = _skip_ws(line, j)
        if not parts or j >= len(line) or line[j] != "=":
            continue
        path = prefix + tuple(parts)
        out.setdefault(path, lineno)
        j = _skip_ws(line, j + 1)
        for q in ('"""', "'''"):
            if line.startswith(q, j) and line.find(q, j + 3) < 0:
                open_string = q
                break
        else:
            array_depth = _scan_value(line, j, path, lineno, out)
    return out


def _bracket_delta(line: str) -> int:
    delta = 0
    i = 0
    while i < len(line):
        c = line[i]
        if c == "#":
            break
        if c in "\"'":
            i = _string_end(line, i)
            continue
        if c == "[":
            delta += 1
        elif c == "]":
            delta -= 1
        i += 1
    return delta


def line_of(lines: dict[Path, int], loc: Sequence[str | int]) -> int | None:
    """The line of ``loc`` or of its nearest enclosing path; ``None`` if none is known."""
    path = tuple(loc)
    while path:
        hit = lines.get(path)
        if hit is not None:
            return hit
        path = path[:-1]
    return None
