"""What re-measuring reports, and the re-measure checks that always re-read their files.

:class:`AttestationChange` is the one result of every re-measure check. The checks here keep
no stat cache: :func:`check_policy` re-reads every policy file on each call and
:func:`check_installed_files` re-hashes every file a measured ``RECORD`` lists. (The checks
that trust unchanged stat data live with the stat cache, in
:class:`~tenure.evidence._attest.Attestor`.)

Invariants:

- A check never raises for a file that disappeared or became unreadable: that is a change.
- A policy digest that was never baselined and is not the digest of the policy files is a
  change (fail closed), never a pass.
- A check returns the first change it finds, or ``None`` when nothing changed.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .._errors import AttestationMismatch
from ..crypto import b64d
from ._measure import _MISSING, _UNREADABLE, _DistState, _files_digest, _hash_file

__all__ = ["AttestationChange", "check_installed_files", "check_policy"]


def _short(hex_digest: str) -> str:
    return hex_digest[:12] + "…" if len(hex_digest) == 64 else hex_digest


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


def check_policy(
    baselines: dict[str, dict[str, str]],
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
    baseline = baselines.get(expected)
    for path, h in hashes.items():
        if h in (_MISSING, _UNREADABLE):
            return _policy_change(path, expected, (baseline or {}).get(path, ""), h)
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
            return _policy_change(path, expected, before, h)
    return None


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


def check_installed_files(dists: Iterable[_DistState]) -> AttestationChange | None:
    for state in dists:
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
