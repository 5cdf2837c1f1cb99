"""Measuring: hashing files, the environment and the code of agents and tools.

Everything here is stateless: each call measures afresh. Caching a measurement and comparing
a new one against it is :class:`~tenure.evidence._attest.Attestor`'s job.

What is measured:

- the interpreter (implementation, version, executable path and the SHA-256 of its bytes) and
  the platform (system, machine, release);
- the name, version and SHA-256 of the ``RECORD`` file of every distribution in the runtime's
  dependency closure (``tenure``'s requirements, recursively, markers evaluated, extras
  ignored), sorted by name;
- each registered agent and tool (:class:`CodeItem`).

Invariants:

- Hashing never raises for a file that is missing or unreadable: it hashes as ``"missing"`` /
  ``"unreadable"`` (never a hex digest), so a comparison against a recorded digest fails.
- A :class:`CodeItem`'s manifest entry holds no stat data: touching a file without changing
  its bytes does not change the digest; the stat data is kept only to skip re-hashing.
- Only the module file that *defines* an agent or tool is measured, not the modules it
  imports.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata as md
import inspect
import marshal
import os
import platform
import re
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import CodeType
from typing import Any, Literal

from .._files import NotRegular, open_regular
from ..crypto import record_bytes, sha256_hex

__all__ = ["CodeItem", "SourceKind", "policy_files_digest"]

_ROOT_DISTRIBUTION = "tenure"
_MISSING = "missing"
_UNREADABLE = "unreadable"

SourceKind = Literal["file", "inspect", "bytecode", "builtin"]
_Stat = tuple[int, int, int, int]  # mtime_ns, ctime_ns, size, inode


def _stat(path: str | Path) -> _Stat | None:
    """(mtime_ns, ctime_ns, size, inode), or ``None`` if the file cannot be stat'ed."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)


def _hash_file(path: str) -> str:
    """SHA-256 hex of the file's bytes, ``"missing"`` or ``"unreadable"``.

    Only a regular file is read: a policy or source file swapped for a FIFO would block the
    open (on the thread re-measuring the environment) and ``/dev/zero`` would never end;
    either is ``"unreadable"``, which changes the digest like any other change.
    """
    try:
        fd = open_regular(Path(path))
    except FileNotFoundError:
        return _MISSING
    except (OSError, NotRegular):
        return _UNREADABLE
    try:
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError:
        return _UNREADABLE
    finally:
        os.close(fd)


def policy_files_digest(paths: Sequence[Path]) -> str:
    """``"sha256:<hex>"`` over the sorted ``(path, sha256 of bytes)`` of ``paths``.

    The default policy-file digest ``Attestor.remeasure`` compares against when it is not
    given a digest function; the manifest records it as ``policy.filesDigest``. A missing or
    unreadable file hashes as ``"missing"`` / ``"unreadable"``, so the digest changes.
    """
    return _files_digest((str(p), _hash_file(str(p))) for p in paths)


def _files_digest(pairs: Iterable[tuple[str, str]]) -> str:
    return "sha256:" + sha256_hex(record_bytes({"files": sorted([p, h] for p, h in pairs)}))


@dataclass(frozen=True, slots=True)
class CodeItem:
    """The measured code of one registered agent or tool.

    ``digest`` (hex SHA-256) depends on ``source``:

    - ``"file"``: ``SHA-256(module file bytes || 0x00 || qualname)`` — the whole file that
      defines the function (``inspect.getsourcefile``), so a helper edited in the same module
      counts; ``file_sha256`` is the SHA-256 of the file alone.
    - ``"inspect"`` (no file on disk, but ``inspect.getsource`` works, e.g. notebook cells):
      ``SHA-256(b"inspect" 0x00 source 0x00 qualname)``.
    - ``"bytecode"`` (REPL lambdas, ``exec``'d code): ``SHA-256(b"bytecode" 0x00
      marshal(code object) 0x00 qualname)``; stable only within one interpreter version.
    - ``"builtin"`` (no Python code): ``SHA-256(b"builtin" 0x00 module "." qualname)``.

    ``path``, ``mtime_ns``, ``ctime_ns``, ``size`` and ``inode`` are kept so re-measuring can
    skip re-hashing a file whose metadata did not change.
    """

    kind: Literal["agent", "tool"]
    name: str
    module: str
    qualname: str
    source: SourceKind
    digest: str
    path: str | None = None
    file_sha256: str = ""
    mtime_ns: int = 0
    ctime_ns: int = 0
    size: int = 0
    inode: int = 0
    hashed_at_ns: int = 0
    code: CodeType | None = field(default=None, repr=False, compare=False)
    target: Any = field(default=None, repr=False, compare=False)

    @property
    def label(self) -> str:
        """``"agent:<name>"`` or ``"tool:<name>"``."""
        return f"{self.kind}:{self.name}"

    @classmethod
    def of(cls, kind: str, name: str, func: Callable[..., Any]) -> CodeItem:
        """Measure ``func`` (unwrapped through ``__wrapped__``) as agent or tool ``name``."""
        if kind not in ("agent", "tool"):
            raise ValueError(f"CodeItem kind must be 'agent' or 'tool', got {kind!r}")
        if not isinstance(name, str) or not name:
            raise ValueError(f"CodeItem name must be a non-empty string, got {name!r}")
        if not callable(func):
            raise TypeError(f"CodeItem.of expects a callable, got {type(func).__name__}")
        k: Literal["agent", "tool"] = "agent" if kind == "agent" else "tool"
        target: Any = inspect.unwrap(func)
        target = getattr(target, "__func__", target)  # bound / class methods
        module = str(getattr(target, "__module__", None) or "")
        qualname = str(getattr(target, "__qualname__", None) or type(target).__qualname__)
        code = getattr(target, "__code__", None)
        code = code if isinstance(code, CodeType) else None
        q = qualname.encode("utf-8")

        path: str | None = None
        with contextlib.suppress(TypeError, OSError):
            path = inspect.getsourcefile(target)
        if path is not None:
            path = os.path.abspath(path)
            now = time.time_ns()
            try:
                with open(path, "rb") as fh:
                    st = os.fstat(fh.fileno())
                    h = hashlib.file_digest(fh, "sha256")
            except OSError:
                path = None
            else:
                file_hex = h.hexdigest()
                h.update(b"\x00" + q)
                return cls(
                    k,
                    name,
                    module,
                    qualname,
                    "file",
                    h.hexdigest(),
                    path,
                    file_hex,
                    st.st_mtime_ns,
                    st.st_ctime_ns,
                    st.st_size,
                    st.st_ino,
                    now,
                    code,
                    target,
                )
        try:
            text = inspect.getsource(target)
        except (TypeError, OSError):
            pass
        else:
            d = sha256_hex(b"inspect\x00" + text.encode("utf-8") + b"\x00" + q)
            return cls(k, name, module, qualname, "inspect", d, code=code, target=target)
        if code is not None:
            d = sha256_hex(b"bytecode\x00" + marshal.dumps(code) + b"\x00" + q)
            return cls(k, name, module, qualname, "bytecode", d, code=code, target=target)
        d = sha256_hex(b"builtin\x00" + f"{module}.{qualname}".encode())
        return cls(k, name, module, qualname, "builtin", d)

    def to_manifest(self) -> dict[str, Any]:
        """The manifest entry (no stat data: touching a file must not change the digest)."""
        return {
            "name": self.label,
            "module": self.module,
            "qualname": self.qualname,
            "source": self.source,
            "path": self.path or "",
            "digest": {"sha256": self.digest},
        }


# --------------------------------------------------------------------------- environment


_NAME_RE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_names(requires: Sequence[str]) -> list[str]:
    """Names of the requirements that apply here (markers evaluated, extras dropped)."""
    try:
        from packaging.requirements import InvalidRequirement, Requirement
    except ImportError:  # pragma: no cover - packaging is nearly always present
        out = []
        for line in requires:
            spec, _, marker = line.partition(";")
            m = _NAME_RE.match(spec)
            if m and "extra" not in marker:
                out.append(m.group(1))  # markers unevaluated: measured if installed
        return out
    names = []
    for line in requires:
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        names.append(req.name)
    return names


@dataclass(slots=True)
class _DistState:
    name: str
    record_path: str | None
    record_sha256: str
    stat: _Stat | None
    hashed_at_ns: int


def _record_path(dist: md.Distribution) -> str | None:
    base = getattr(dist, "_path", None)  # PathDistribution; others have no RECORD on disk
    if isinstance(base, Path):
        p = base / "RECORD"
        return os.path.abspath(p) if p.is_file() else None
    return None


def _measure_environment() -> tuple[dict[str, Any], dict[str, _DistState]]:
    """Measure interpreter, platform and the dependency closure (slow: tens of ms)."""
    executable = os.path.realpath(sys.executable) if sys.executable else ""
    interpreter = {
        "implementation": sys.implementation.name,
        "version": platform.python_version(),
        "executable": executable,
        "executable_sha256": _hash_file(executable) if executable else _MISSING,
    }
    plat = {
        "system": platform.system(),
        "machine": platform.machine(),
        "release": platform.release(),
    }
    seen: dict[str, dict[str, str]] = {}
    states: dict[str, _DistState] = {}
    queue = [_ROOT_DISTRIBUTION]
    while queue:
        raw = queue.pop()
        key = _normalize(raw)
        if key in seen:
            continue
        try:
            dist = md.distribution(raw)
        except md.PackageNotFoundError:
            seen[key] = {"name": key, "version": _MISSING, "record_sha256": ""}
            continue
        rpath = _record_path(dist)
        now = time.time_ns()
        st = _stat(rpath) if rpath else None
        rhash = _hash_file(rpath) if rpath else ""
        seen[key] = {"name": key, "version": str(dist.version), "record_sha256": rhash}
        states[key] = _DistState(key, rpath, rhash, st, now)
        queue.extend(_requirement_names(dist.requires or []))
    env = {
        "interpreter": interpreter,
        "platform": plat,
        "distributions": [seen[k] for k in sorted(seen)],
    }
    return env, states
