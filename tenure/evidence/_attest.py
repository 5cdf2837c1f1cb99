"""Environment attestation: measure, sign as an in-toto Statement in DSSE, re-measure.

What is measured (the *manifest*, canonicalized with RFC 8785):

- ``interpreter``, ``platform`` and ``distributions`` (see :mod:`._measure`);
- ``code``: one entry per registered agent and tool (:class:`CodeItem`);
- ``policy``: the policy digest, and the path and SHA-256 of each policy file;
- ``runtime``: the Tenure version and the runtime configuration.

:class:`Attestor` holds what was measured and builds, signs (:mod:`._statement`) and
re-measures (:mod:`._remeasure`) against it. The names other modules use are importable from
here.

Invariants:

- The environment is measured once per :class:`Attestor` (``environment()`` caches it): it
  costs tens of milliseconds and must never be paid per run.
- The signed manifest bytes are exactly the RFC 8785 bytes of the manifest passed in: a
  cached section is reused only when it equals the section given.
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

import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .._version import __version__
from ..crypto import Envelope, SigningKey, canonical, canonical_fast, record_bytes, sha256_hex
from ._copies import SharedCopy
from ._measure import (
    _MISSING,
    _UNREADABLE,
    CodeItem,
    _DistState,
    _files_digest,
    _hash_file,
    _measure_environment,
    _Stat,
    _stat,
    policy_files_digest,
)
from ._remeasure import AttestationChange, _short, check_installed_files, check_policy
from ._statement import (
    ATTESTATION_FILE,
    PAYLOAD_TYPE,
    PREDICATE_TYPE,
    PREDICATE_TYPE_V1,
    STATEMENT_TYPE,
    SUBJECT_NAME,
    envelope_file_bytes,
    sign_statement,
    verify_attestation,
    write_envelope,
)

__all__ = [
    "ATTESTATION_FILE",
    "PAYLOAD_TYPE",
    "PREDICATE_TYPE",
    "PREDICATE_TYPE_V1",
    "RACY_WINDOW_NS",
    "STATEMENT_TYPE",
    "SUBJECT_NAME",
    "AttestationChange",
    "Attestor",
    "CodeItem",
    "policy_files_digest",
    "verify_attestation",
]

# Attestor's stat-cached checks look ``_stat``, ``_hash_file`` and ``RACY_WINDOW_NS`` up in this
# module, and ``environment()`` looks up ``_measure_environment`` here: tests patch them here.

#: a file modified less than this long before it was hashed is re-hashed on every re-measure
RACY_WINDOW_NS = 2_000_000_000
_ENV_KEYS = ("distributions", "interpreter", "platform")


def _is_racy(st: _Stat, hashed_at_ns: int) -> bool:
    """A file changed (mtime or ctime) too close to when it was hashed to trust its stat."""
    return hashed_at_ns - max(st[0], st[1]) < RACY_WINDOW_NS


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
        # (inputs, envelope, its digest, the attestation file's bytes) of the last run's
        # statement: signed once, shared while the inputs are unchanged
        self._run_statement: tuple[tuple[Any, ...], Envelope, str, SharedCopy] | None = None
        self._version = __version__

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
        hashed = [(str(p), _hash_file(str(p))) for p in policy_files]
        return self._manifest(code, policy_digest, hashed, config)

    def _manifest(
        self,
        code: Sequence[CodeItem],
        policy_digest: str,
        policy_files: Sequence[tuple[str, str]],
        config: Mapping[str, str | int | bool],
    ) -> dict[str, Any]:
        """:meth:`manifest` with the policy files already hashed (``(path, sha256)``)."""
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
            ({"path": path, "sha256": sha} for path, sha in policy_files),
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
                parts.append(canonical_fast({k: v})[1:-1])
        return b"{" + b",".join(parts) + b"}"

    def statement(self, manifest: Mapping[str, Any]) -> tuple[Envelope, str]:
        """Sign the in-toto Statement of ``manifest``; return the DSSE envelope and its digest.

        The digest (``"sha256:<hex>"`` of the payload bytes) is what leases and ``run.start``
        carry as ``attestation``.
        """
        return sign_statement(self._key, self._manifest_bytes(manifest))

    def sign_run(
        self,
        code: Sequence[CodeItem],
        policy_digest: str,
        policy_files: Sequence[Path],
        config: Mapping[str, str | int | bool],
    ) -> tuple[Envelope, str]:
        """The statement a new run names: :meth:`manifest` + :meth:`statement`, signed once
        and shared by the runs that follow while their inputs are unchanged.

        The policy files are hashed for every run (a file swapped between runs changes the
        manifest, and so signs a new statement); an identical manifest is neither rebuilt
        nor signed again. Each run binds the shared statement in its own ledger (see
        :mod:`._statement`).
        """
        files = tuple(sorted((str(p), _hash_file(str(p))) for p in policy_files))
        key = (tuple(code), policy_digest, files, tuple(config.items()))
        cached = self._run_statement
        if cached is None or cached[0] != key:
            mbytes = self._manifest_bytes(self._manifest(code, policy_digest, files, config))
            envelope, digest = sign_statement(self._key, mbytes, sha256_hex(mbytes))
            copy = SharedCopy(envelope_file_bytes(envelope))
            cached = self._run_statement = (key, envelope, digest, copy)
        return cached[1], cached[2]

    def write(self, run_dir: Path, envelope: Envelope, *, durable: bool = True) -> Path:
        """Create ``run_dir/attestation.intoto.json`` (exclusive create in a fresh run dir).

        With ``durable`` the file and the directory are fsynced too; the runtime skips that
        under group commit because the ledger carries the same envelope.
        """
        cached = self._run_statement
        copy = cached[3] if cached is not None and cached[1] is envelope else None
        return write_envelope(Path(run_dir), envelope, durable=durable, copy=copy)

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
        change = check_policy(
            self._policy_baselines, policy_files, policy_digest_of_files, expected_policy_digest
        )
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
            change = check_installed_files(self._dists.values())
        return change


def _code_sort_key(item: CodeItem) -> tuple[str, str, str]:
    return (item.label, item.module, item.qualname)
