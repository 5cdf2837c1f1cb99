"""Environment attestation: measure, sign as an in-toto Statement in DSSE, re-measure.

What is measured (the *manifest*, canonicalized with RFC 8785):

- ``interpreter``: implementation, version, executable path and the SHA-256 of its bytes;
- ``platform``: system, machine, release;
- ``distributions``: name, version and SHA-256 of the ``RECORD`` file of every distribution
  in the runtime's dependency closure (``tenure``'s requirements, recursively, markers
  evaluated, extras ignored), sorted by name;
- ``code``: one entry per registered agent and tool (:class:`CodeItem`);
- ``policy``: the policy digest, and the path and SHA-256 of each policy file;
- ``runtime``: the Tenure version and the runtime configuration.

Invariants:

- The environment is measured once per :class:`Attestor` (``environment()`` caches it): it
  costs tens of milliseconds and must never be paid per run.
- The subject digest of a statement is the SHA-256 of the RFC 8785 bytes of exactly the
  manifest inside its predicate; the payload is the RFC 8785 bytes of the statement.
  :func:`verify_attestation` checks both and refuses anything else.
- Re-measuring never raises for a file that disappeared or became unreadable: that is a
  change, reported as an :class:`AttestationChange`.
- The cheap re-measure trusts a code file's ``(mtime_ns, ctime_ns, size, inode)`` only once
  its mtime and ctime are older than :data:`RACY_WINDOW_NS` at hashing time (as git does for
  racily-clean index entries); a file changed within that window is re-hashed every time.
  ``ctime`` cannot be set from user space, so ``touch -r`` after a same-size edit is caught.

This is self-attestation: evidence signed by the runtime's own key about what it observed,
not a hardware root of trust. Only the module file that *defines* an agent or tool is
measured, not the modules it imports (those are covered only if they belong to a measured
distribution and ``remeasure_full(installed_files=True)`` is run).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import importlib.metadata as md
import inspect
import json
import marshal
import os
import platform
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import CodeType
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ._canonical import b64d, canonical, check_record_domain, record_bytes, sha256_hex
from ._dsse import Envelope, sign_envelope, verify_envelope
from ._errors import AttestationMismatch
from ._keys import SigningKey

__all__ = [
    "ATTESTATION_FILE",
    "PAYLOAD_TYPE",
    "PREDICATE_TYPE",
    "RACY_WINDOW_NS",
    "STATEMENT_TYPE",
    "SUBJECT_NAME",
    "AttestationChange",
    "Attestor",
    "CodeItem",
    "policy_files_digest",
    "verify_attestation",
]

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://tenure.dev/attestation/run-environment/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
SUBJECT_NAME = "tenure-run-environment"
ATTESTATION_FILE = "attestation.intoto.json"
#: a file modified less than this long before it was hashed is re-hashed on every re-measure
RACY_WINDOW_NS = 2_000_000_000

_ROOT_DISTRIBUTION = "tenure"
_ENV_KEYS = ("distributions", "interpreter", "platform")
_MISSING = "missing"
_UNREADABLE = "unreadable"

SourceKind = Literal["file", "inspect", "bytecode", "builtin"]
_Stat = tuple[int, int, int, int]  # mtime_ns, ctime_ns, size, inode


# --------------------------------------------------------------------------- helpers


def _short(hex_digest: str) -> str:
    return hex_digest[:12] + "…" if len(hex_digest) == 64 else hex_digest


def _stat(path: str) -> _Stat | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)


def _hash_file(path: str) -> str:
    """SHA-256 hex of the file's bytes, ``"missing"`` or ``"unreadable"``."""
    try:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except FileNotFoundError:
        return _MISSING
    except OSError:
        return _UNREADABLE


def _is_racy(st: _Stat, hashed_at_ns: int) -> bool:
    """A file changed (mtime or ctime) too close to when it was hashed to trust its stat."""
    return hashed_at_ns - max(st[0], st[1]) < RACY_WINDOW_NS


def _fast_canonical(obj: Any) -> bytes:
    """RFC 8785 bytes of ``obj``: ``json.dumps`` on the domain where it is identical."""
    try:
        check_record_domain(obj)
        return record_bytes(obj)
    except (ValueError, UnicodeEncodeError):
        return canonical(obj)


def policy_files_digest(paths: Sequence[Path]) -> str:
    """``"sha256:<hex>"`` over the sorted ``(path, sha256 of bytes)`` of ``paths``.

    The default policy-file digest :meth:`Attestor.remeasure` compares against when it is not
    given a digest function; the manifest records it as ``policy.filesDigest``. A missing or
    unreadable file hashes as ``"missing"`` / ``"unreadable"``, so the digest changes.
    """
    return _files_digest((str(p), _hash_file(str(p))) for p in paths)


def _files_digest(pairs: Iterable[tuple[str, str]]) -> str:
    return "sha256:" + sha256_hex(record_bytes({"files": sorted([p, h] for p, h in pairs)}))


# --------------------------------------------------------------------------- code items


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


@dataclass(frozen=True, slots=True)
class AttestationChange:
    """What re-measuring found different from the attested environment.

    ``what`` names the measured item (``"agent:planner"``, ``"policy"``,
    ``"distribution:anyio"``, ``"interpreter"``); ``before`` / ``after`` are hex digests or
    ``"missing"`` / ``"unreadable"``; ``description`` is the sentence for people.
    """

    what: str
    check: str
    path: str
    before: str
    after: str
    description: str

    def __str__(self) -> str:
        return self.description

    def to_error(
        self, *, run_id: str | None = None, lease_id: str | None = None, source: str = "watchdog"
    ) -> AttestationMismatch:
        """The :class:`AttestationMismatch` that stops the run for this change."""
        return AttestationMismatch(
            self.description,
            run_id=run_id,
            lease_id=lease_id,
            check=self.check,
            task=self.what if self.what.startswith(("agent:", "tool:")) else None,
            source=source,
        )


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


def _tenure_version() -> str:
    try:
        return md.version(_ROOT_DISTRIBUTION)
    except md.PackageNotFoundError:  # pragma: no cover - running from an uninstalled tree
        return "0+unknown"


# --------------------------------------------------------------------------- attestor


class Attestor:
    """Measures the environment once, builds manifests and signs run statements.

    One per :class:`Runtime`. Not thread-safe: the runtime calls it from its event loop (the
    watchdog's re-measure included).
    """

    def __init__(self, key: SigningKey, *, watch_distributions: bool = True) -> None:
        """``watch_distributions``: also stat each RECORD in :meth:`remeasure`."""
        if not isinstance(key, SigningKey):
            raise TypeError(f"Attestor needs a SigningKey, got {type(key).__name__}")
        self._key = key
        self._watch_distributions = watch_distributions
        self._env: dict[str, Any] | None = None
        # section name -> (private copy, RFC 8785 bytes) for sections holding strings only,
        # where == on the values implies identical canonical bytes
        self._sections: dict[str, tuple[Any, bytes]] = {}
        self._dists: dict[str, _DistState] = {}
        # path -> (stat, file sha256, hashed_at_ns): the last verified state of a code file
        self._files: dict[str, tuple[_Stat, str, int]] = {}
        # policy digest -> {path: sha256} of the files it was loaded from
        self._policy_baselines: dict[str, dict[str, str]] = {}
        self._last_code: tuple[CodeItem, ...] = ()
        self._version = _tenure_version()

    @property
    def key_id(self) -> str:
        """The id of the signing key."""
        return self._key.key_id

    # -- measuring -----------------------------------------------------------------

    def environment(self) -> dict[str, Any]:
        """Interpreter, platform and distributions, measured on the first call only.

        Returns a fresh copy each time; the measured values are kept inside the attestor.
        """
        if self._env is None:
            env, self._dists = _measure_environment()
            for k in _ENV_KEYS:
                self._cache_section(k, env[k])
            self._env = env
        copy: dict[str, Any] = json.loads(
            b"{"
            + b",".join(b'"%s":%s' % (k.encode(), self._sections[k][1]) for k in _ENV_KEYS)
            + b"}"
        )
        return copy

    def _cache_section(self, name: str, value: Any) -> Any:
        """Cache the canonical bytes of a string-only section; return a fresh copy of it.

        The sections passed here are built by this module from strings only (ASCII keys), the
        domain on which ``json.dumps`` emits exactly the RFC 8785 bytes.
        """
        try:
            data = record_bytes(value)
        except UnicodeEncodeError:
            data = canonical(value)
        self._sections[name] = (value, data)  # the caller hands over ``value``: never shared
        return json.loads(data)

    def manifest(
        self,
        code: Sequence[CodeItem],
        policy_digest: str,
        policy_files: Sequence[Path],
        config: Mapping[str, str | int | bool],
    ) -> dict[str, Any]:
        """The manifest of one run (environment + code + policy + runtime configuration)."""
        for item in code:
            if not isinstance(item, CodeItem):
                raise TypeError(f"manifest code must be CodeItem, got {type(item).__name__}")
        if not isinstance(policy_digest, str):
            raise TypeError("policy_digest must be a string")
        cfg: dict[str, str | int | bool] = {}
        for k, v in config.items():
            if not isinstance(k, str) or not isinstance(v, (str, int, bool)):
                raise ValueError(
                    f"config entries must be str -> str|int|bool, got {k!r}: {type(v).__name__}"
                )
            if isinstance(v, int) and not isinstance(v, bool) and abs(v) > 2**53 - 1:
                raise ValueError(f"config {k!r}: integer {v} is outside ±(2**53-1) (I-JSON)")
            cfg[k] = v
        env = self.environment()
        files = sorted(
            ({"path": str(p), "sha256": _hash_file(str(p))} for p in policy_files),
            key=lambda f: f["path"],
        )
        code_t = tuple(code)
        if code_t != self._last_code or "code" not in self._sections:
            entries = [c.to_manifest() for c in sorted(code_t, key=_code_sort_key)]
            self._cache_section("code", entries)
        self._last_code = code_t
        files_digest = _files_digest((f["path"], f["sha256"]) for f in files)
        policy_section = {"digest": policy_digest, "files": files, "filesDigest": files_digest}
        baseline = {f["path"]: f["sha256"] for f in files}
        self._policy_baselines[policy_digest] = baseline
        self._policy_baselines[files_digest] = dict(baseline)
        return {
            **env,
            "code": json.loads(self._sections["code"][1]),
            "policy": self._cache_section("policy", policy_section),
            "runtime": {"version": self._version, "config": cfg},
        }

    # -- signing -------------------------------------------------------------------

    def _manifest_bytes(self, manifest: Mapping[str, Any]) -> bytes:
        parts = []
        for k in sorted(manifest):
            if not isinstance(k, str) or not k.isascii():
                return canonical(manifest)
            v = manifest[k]
            cached = self._sections.get(k)
            if cached is not None and v == cached[0]:
                parts.append(b'"%s":%s' % (k.encode(), cached[1]))
            else:
                parts.append(_fast_canonical({k: v})[1:-1])
        return b"{" + b",".join(parts) + b"}"

    def statement(self, run_id: str, manifest: Mapping[str, Any]) -> tuple[Envelope, str]:
        """Sign the run's in-toto Statement; return the DSSE envelope and its digest.

        The digest (``"sha256:<hex>"`` of the payload bytes) is what leases and ``run.start``
        carry as ``attestation``.
        """
        if not isinstance(run_id, str) or not run_id:
            raise ValueError(f"run_id must be a non-empty string, got {run_id!r}")
        mbytes = self._manifest_bytes(manifest)
        issued = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
        predicate_rest = _fast_canonical(
            {
                "attester": {"keyid": self._key.key_id},
                "issuedAt": issued,
                "nonce": os.urandom(16).hex(),
                "runId": run_id,
            }
        )
        # keys sort as attester < issuedAt < manifest < nonce < runId
        head, _, tail = predicate_rest.partition(b',"nonce":')
        predicate = head + b',"manifest":' + mbytes + b',"nonce":' + tail
        payload = (
            b'{"_type":"'
            + STATEMENT_TYPE.encode()
            + b'","predicate":'
            + predicate
            + b',"predicateType":"'
            + PREDICATE_TYPE.encode()
            + b'","subject":[{"digest":{"sha256":"'
            + sha256_hex(mbytes).encode()
            + b'"},"name":"'
            + SUBJECT_NAME.encode()
            + b'"}]}'
        )
        envelope = sign_envelope(self._key, PAYLOAD_TYPE, payload)
        return envelope, "sha256:" + sha256_hex(payload)

    def write(self, run_dir: Path, envelope: Envelope, *, durable: bool = True) -> Path:
        """Write ``run_dir/attestation.intoto.json`` atomically (tmp, rename).

        With ``durable`` the file and the directory are fsynced too; the runtime skips that
        under group commit because the ledger carries the same envelope.
        """
        run_dir = Path(run_dir)
        target = run_dir / ATTESTATION_FILE
        tmp = run_dir / f".{ATTESTATION_FILE}.{os.getpid()}.tmp"
        data = json.dumps(envelope, sort_keys=True, indent=2).encode("utf-8") + b"\n"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
        if durable:
            dfd = os.open(run_dir, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        return target

    # -- re-measuring --------------------------------------------------------------

    def _check_file(self, item: CodeItem, full: bool) -> AttestationChange | None:
        assert item.path is not None
        path = item.path
        st = _stat(path)
        cached = self._files.get(path)
        if cached is None:
            cached = (
                (item.mtime_ns, item.ctime_ns, item.size, item.inode),
                item.file_sha256,
                item.hashed_at_ns,
            )
        if st is not None and not full and st == cached[0] and not _is_racy(st, cached[2]):
            current = cached[1]
        else:
            now = time.time_ns()
            current = _hash_file(path) if st is not None else _MISSING
            if current == item.file_sha256 and st is not None:
                self._files[path] = (st, current, now)
        if current == item.file_sha256:
            return None
        if current in (_MISSING, _UNREADABLE):
            how = "was deleted" if current == _MISSING else "became unreadable"
            desc = f"{item.label} source file {path} {how}"
        else:
            desc = (
                f"{item.label} source file {path} changed "
                f"(sha256 {_short(item.file_sha256)} → {_short(current)})"
            )
        return AttestationChange(
            item.label, "attestation.code", path, item.file_sha256, current, desc
        )

    def _check_code(self, code: Sequence[CodeItem], full: bool) -> AttestationChange | None:
        checked: set[tuple[str, str]] = set()  # (path, file sha256) already verified this call
        for item in code:
            if item.code is not None and getattr(item.target, "__code__", None) is not item.code:
                return AttestationChange(
                    item.label,
                    "attestation.code",
                    item.path or "",
                    item.digest,
                    "replaced",
                    f"{item.label} code object of {item.module}.{item.qualname} was replaced "
                    "in memory (reloaded or patched)",
                )
            if item.path is not None and (item.path, item.file_sha256) not in checked:
                change = self._check_file(item, full)
                if change is not None:
                    return change
                checked.add((item.path, item.file_sha256))
        return None

    def remeasure(
        self,
        code: Sequence[CodeItem],
        policy_files: Sequence[Path],
        policy_digest_of_files: Callable[[Sequence[Path]], str] | None,
        expected_policy_digest: str,
    ) -> AttestationChange | None:
        """Cheaply re-measure code files, policy files and installed distributions.

        Code files are re-hashed only when their stat data changed (or is racy); a code
        object replaced in memory is a change too.

        Policy files are re-read every time. With ``policy_digest_of_files``, its result for
        ``policy_files`` must equal ``expected_policy_digest``. Without it (the fast path),
        each file's SHA-256 must equal the one recorded for ``expected_policy_digest`` by
        :meth:`manifest` or :meth:`baseline_policy`; ``expected_policy_digest`` may also be a
        :func:`policy_files_digest` (``manifest["policy"]["filesDigest"]``). Any other digest
        is a change (fail closed): after a policy reload that no new run follows, call
        :meth:`baseline_policy` first. A missing or unreadable policy file is always a change.

        Each measured distribution's RECORD is stat'ed (``watch_distributions``). Returns
        the first change found, or ``None``.
        """
        change = self._check_code(code, full=False)
        if change is not None:
            return change
        change = self._check_policy(policy_files, policy_digest_of_files, expected_policy_digest)
        if change is not None:
            return change
        if self._watch_distributions:
            return self._check_distributions(full=False)
        return None

    def baseline_policy(self, policy_digest: str, policy_files: Sequence[Path]) -> None:
        """Record the current bytes of ``policy_files`` as what ``policy_digest`` was loaded from.

        :meth:`manifest` does this for the digest it is given; call it right after a policy
        reload, before :meth:`remeasure` is asked about the new digest.
        """
        self._policy_baselines[policy_digest] = {str(p): _hash_file(str(p)) for p in policy_files}

    def _check_policy(
        self,
        policy_files: Sequence[Path],
        digest_of: Callable[[Sequence[Path]], str] | None,
        expected: str,
    ) -> AttestationChange | None:
        if digest_of is not None:
            try:
                actual = digest_of(policy_files)
            except Exception as exc:  # a policy file that no longer loads is a change
                actual = f"unloadable ({type(exc).__name__}: {exc})"
            if actual == expected:
                return None
            return AttestationChange(
                "policy",
                "attestation.policy",
                ",".join(str(p) for p in policy_files),
                expected,
                actual,
                f"policy files no longer match the attested policy digest "
                f"(expected {expected}, measured {actual})",
            )
        hashes = {str(p): _hash_file(str(p)) for p in policy_files}
        baseline = self._policy_baselines.get(expected)
        for path, h in hashes.items():
            if h in (_MISSING, _UNREADABLE):
                return self._policy_change(path, expected, (baseline or {}).get(path, ""), h)
        if baseline is None:
            actual = _files_digest(hashes.items())
            if actual == expected:  # a ``policy_files_digest``
                return None
            return AttestationChange(
                "policy",
                "attestation.policy",
                ",".join(hashes),
                expected,
                actual,
                f"policy digest {expected} was never attested and is not the digest of the "
                f"policy files ({actual}); after a reload call Attestor.baseline_policy()",
            )
        for path, h in hashes.items():
            before = baseline.setdefault(path, h)
            if h != before:
                return self._policy_change(path, expected, before, h)
        return None

    @staticmethod
    def _policy_change(path: str, expected: str, before: str, after: str) -> AttestationChange:
        if after in (_MISSING, _UNREADABLE):
            how = "was deleted" if after == _MISSING else "became unreadable"
        else:
            how = f"changed (sha256 {_short(before)} → {_short(after)})"
        return AttestationChange(
            "policy",
            "attestation.policy",
            path,
            before,
            after,
            f"policy file {path} {how} outside a policy reload (attested policy digest {expected})",
        )

    def _check_distributions(self, full: bool) -> AttestationChange | None:
        for state in self._dists.values():
            if state.record_path is None:
                continue
            st = _stat(state.record_path)
            if (
                st is not None
                and not full
                and st == state.stat
                and not _is_racy(st, state.hashed_at_ns)
            ):
                continue
            now = time.time_ns()
            current = _hash_file(state.record_path) if st is not None else _MISSING
            if current == state.record_sha256:
                state.stat, state.hashed_at_ns = st, now
                continue
            how = (
                "was removed (uninstalled or upgraded)"
                if current == _MISSING
                else "became unreadable"
                if current == _UNREADABLE
                else f"changed (sha256 {_short(state.record_sha256)} → {_short(current)})"
            )
            return AttestationChange(
                f"distribution:{state.name}",
                "attestation.environment",
                state.record_path,
                state.record_sha256,
                current,
                f"installed distribution {state.name}: RECORD {state.record_path} {how}",
            )
        return None

    def remeasure_full(self, *, installed_files: bool = False) -> AttestationChange | None:
        """Slow path, on demand: re-hash the interpreter, every RECORD and every code file.

        Code files are those of the last :meth:`manifest`. With ``installed_files`` each
        file a measured RECORD lists with a hash is re-hashed and compared (about half a
        second for a typical closure).
        """
        if self._env is None:
            self.environment()
        assert self._env is not None
        interp = self._env["interpreter"]
        if interp["executable"]:
            now_hash = _hash_file(interp["executable"])
            if now_hash != interp["executable_sha256"]:
                return AttestationChange(
                    "interpreter",
                    "attestation.environment",
                    interp["executable"],
                    interp["executable_sha256"],
                    now_hash,
                    f"interpreter {interp['executable']} changed "
                    f"(sha256 {_short(interp['executable_sha256'])} → {_short(now_hash)})",
                )
        change = self._check_code(self._last_code, full=True)
        if change is None:
            change = self._check_distributions(full=True)
        if change is None and installed_files:
            change = self._check_installed_files()
        return change

    def _check_installed_files(self) -> AttestationChange | None:
        for state in self._dists.values():
            if state.record_path is None:
                continue
            base = Path(state.record_path).parent.parent
            try:
                lines = Path(state.record_path).read_text("utf-8").splitlines()
            except OSError:
                return AttestationChange(
                    f"distribution:{state.name}",
                    "attestation.environment",
                    state.record_path,
                    state.record_sha256,
                    _UNREADABLE,
                    f"installed distribution {state.name}: RECORD became unreadable",
                )
            for parts in csv.reader(lines):
                if len(parts) != 3 or not parts[1].startswith("sha256="):
                    continue
                rel = parts[0]
                try:
                    want = b64d(parts[1][len("sha256=") :]).hex()
                except ValueError:
                    want = "invalid"
                path = os.path.normpath(str(base / rel))
                got = _hash_file(path)
                if got != want:
                    return AttestationChange(
                        f"distribution:{state.name}",
                        "attestation.environment",
                        path,
                        want,
                        got,
                        f"installed distribution {state.name}: file {path} "
                        f"{'is ' + got if got in (_MISSING, _UNREADABLE) else 'changed'} "
                        f"(RECORD sha256 {_short(want)}, now {_short(got)})",
                    )
        return None


def _code_sort_key(item: CodeItem) -> tuple[str, str, str]:
    return (item.label, item.module, item.qualname)


# --------------------------------------------------------------------------- verification


def verify_attestation(envelope: Any, public_key: Ed25519PublicKey) -> dict[str, Any]:
    """Verify a run attestation envelope and return its in-toto Statement.

    Checks, in order: the DSSE signature under ``public_key``, the payload type, that the
    payload is the RFC 8785 form of a JSON object, the statement and predicate types, the
    single subject, and that its SHA-256 equals the digest of the canonical manifest.
    Raises ``ValueError`` naming the failed check.
    """
    payload = verify_envelope(envelope, public_key, PAYLOAD_TYPE)
    try:
        statement = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"attestation payload: not JSON ({exc})") from exc
    if not isinstance(statement, dict):
        raise ValueError("attestation payload: expected a JSON object")
    try:
        recanonical = canonical(statement)
    except Exception as exc:
        raise ValueError(f"attestation payload: not canonicalizable ({exc})") from exc
    if recanonical != payload:
        raise ValueError("attestation payload: not in RFC 8785 canonical form")
    if statement.get("_type") != STATEMENT_TYPE:
        raise ValueError(
            f"statement._type: expected {STATEMENT_TYPE!r}, got {statement.get('_type')!r}"
        )
    if statement.get("predicateType") != PREDICATE_TYPE:
        raise ValueError(
            f"statement.predicateType: expected {PREDICATE_TYPE!r}, "
            f"got {statement.get('predicateType')!r}"
        )
    predicate = statement.get("predicate")
    if not isinstance(predicate, dict) or not isinstance(predicate.get("manifest"), dict):
        raise ValueError("statement.predicate.manifest: expected a JSON object")
    for fld in ("runId", "issuedAt"):
        if not isinstance(predicate.get(fld), str):
            raise ValueError(f"statement.predicate.{fld}: expected a string")
    subject = statement.get("subject")
    if (
        not isinstance(subject, list)
        or len(subject) != 1
        or not isinstance(subject[0], dict)
        or subject[0].get("name") != SUBJECT_NAME
        or not isinstance(subject[0].get("digest"), dict)
    ):
        raise ValueError(f"statement.subject: expected one {SUBJECT_NAME!r} with a digest")
    want = subject[0]["digest"].get("sha256")
    got = sha256_hex(canonical(predicate["manifest"]))
    if want != got:
        raise ValueError(
            f"statement.subject[0].digest.sha256: expected the manifest digest {got}, got {want!r}"
        )
    return statement
