"""One run from many processes: verify every segment and every link between them offline.

``tenure export RUN_ID --backend URL --out DIR`` writes::

    DIR/segments.json        {"format": CLUSTER_FORMAT, "run": RUN_ID, "segments": [...]}
    DIR/<segment>/ledger.jsonl, checkpoint, tenure.pub[, tenure.cert]

one sub-directory per segment (the root segment is named by the run id). With the
operator's public key, :func:`verify_cluster` trusts a segment's key only through its
certificate (:mod:`._certs`); without it each segment's own key copy is used, and said.

Checked, beyond each segment verifying as a run of ``RUN_ID`` (:func:`verify_run`):

- there is exactly one root segment, and every other segment names a parent in the index;
- a child opens with ``segment.start`` naming its parent segment and the index of the
  parent's ``delegation.queued`` record that names the child;
- the delegated lease in ``segment.start`` verifies under the parent segment's key, is for
  this run, and holds every scope the child's run was given;
- the parent recorded how the child ended: ``delegation.returned`` with the child's exact
  size and signed checkpoint, or ``delegation.lost`` with a durable prefix no longer than
  the child's segment; a child with neither was cut off by its parent's own stop;
- every ``delegation.queued`` of any segment has its segment in the index, or was never
  claimed (a warning).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ..crypto import load_public_key, verify_envelope
from ._certs import CERT_NAME, check_certificate
from ._format import (
    CHECKPOINT_NAME,
    DELEGATION_LOST,
    DELEGATION_QUEUED,
    DELEGATION_RETURNED,
    LEASE_PAYLOAD_TYPE,
    LEDGER_NAME,
    PUBLIC_KEY_NAME,
    RUN_START,
    SEGMENT_START,
    valid_run_id,
)
from ._reader import LedgerReader, loads_bounded, read_evidence_file
from ._report_model import VerifyReport
from ._verify import verify_run

__all__ = ["CLUSTER_FORMAT", "CLUSTER_INDEX_NAME", "ClusterReport", "verify_cluster"]

CLUSTER_FORMAT: Final = "tenure-cluster-run/1"
CLUSTER_INDEX_NAME: Final = "segments.json"
_MAX_INDEX_BYTES: Final = 4 << 20

Verdict = Literal["verified", "incomplete", "invalid"]


@dataclass
class ClusterReport:
    """The outcome of :func:`verify_cluster`: per-segment reports and the links' findings."""

    root: str
    run_id: str = ""
    verdict: Verdict = "invalid"
    segments: dict[str, VerifyReport] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True only for ``verdict == "verified"``."""
        return self.verdict == "verified"


@dataclass
class _Segment:
    id: str
    parent: str
    parent_index: int
    key: Ed25519PublicKey | None = None
    records: list[dict[str, Any]] = field(default_factory=list)


def is_cluster_dir(path: Path) -> bool:
    """Whether ``path`` is an exported multi-segment run."""
    return (path / CLUSTER_INDEX_NAME).is_file()


def _read_index(root: Path, rep: ClusterReport) -> list[_Segment]:
    path = root / CLUSTER_INDEX_NAME
    index = loads_bounded(read_evidence_file(path, _MAX_INDEX_BYTES))
    if not isinstance(index, dict) or index.get("format") != CLUSTER_FORMAT:
        raise ValueError(f"{path}: not a {CLUSTER_FORMAT} index")
    run, entries = index.get("run"), index.get("segments")
    if not isinstance(run, str) or not valid_run_id(run) or not isinstance(entries, list):
        raise ValueError(f"{path}: 'run' must be a run id and 'segments' a list")
    rep.run_id = run
    segments = []
    for n, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ValueError(f"{path}: segment {n} is not an object")
        sid, parent, at = entry.get("id"), entry.get("parent"), entry.get("parent_index")
        if not (isinstance(sid, str) and valid_run_id(sid)) or not isinstance(parent, str):
            raise ValueError(f"{path}: segment {n} has no valid 'id' / 'parent'")
        if type(at) is not int:
            raise ValueError(f"{path}: segment {sid} has no integer 'parent_index'")
        segments.append(_Segment(sid, parent, at))
    return segments


def _key_of(seg_dir: Path, operator: Ed25519PublicKey | None) -> Ed25519PublicKey:
    read_evidence_file(seg_dir / PUBLIC_KEY_NAME)  # a regular file of bounded size, first
    shipped = load_public_key(seg_dir / PUBLIC_KEY_NAME)
    if operator is None:
        return shipped
    cert_path = seg_dir / CERT_NAME
    if not cert_path.exists():
        raise ValueError(f"segment {seg_dir.name} has no certificate from the operator")
    name, raw = check_certificate(loads_bounded(read_evidence_file(cert_path)), operator)
    if shipped.public_bytes_raw() != raw:
        raise ValueError(
            f"segment {seg_dir.name}: its key is not the one the operator certified for {name!r}"
        )
    return shipped


def _records(seg_dir: Path) -> list[dict[str, Any]]:
    # The one reader: bounded lines, regular files only; a torn tail is not a record.
    return [rec for _, _, rec in LedgerReader(seg_dir / LEDGER_NAME, check_fields=False)]


def verify_cluster(root: Path | str, operator: Ed25519PublicKey | None = None) -> ClusterReport:
    """Verify an exported multi-segment run (see the module docstring)."""
    root = Path(root)
    rep = ClusterReport(str(root))
    try:
        segments = _read_index(root, rep)
    except (OSError, ValueError) as exc:
        rep.failures.append(f"index: {exc}")
        return rep
    if operator is None:
        rep.warnings.append(
            "no operator key given: each segment was checked with its own shipped key copy"
        )
    by_id = {s.id: s for s in segments}
    roots = [s for s in segments if not s.parent]
    if len(roots) != 1 or len(by_id) != len(segments):
        rep.failures.append(f"the index must list one root and unique ids, got {len(roots)} roots")
        return rep
    for seg in segments:
        seg_dir = root / seg.id
        try:
            seg.key = _key_of(seg_dir, operator)
            seg.records = _records(seg_dir)
        except (OSError, ValueError) as exc:
            rep.failures.append(f"segment {seg.id}: {exc}")
            continue
        report = verify_run(seg_dir, seg.key, expect_run_id=rep.run_id)
        rep.segments[seg.id] = report
        if report.verdict == "invalid":
            rep.failures.append(f"segment {seg.id}: {report.failure_line()}")
    if not rep.failures:
        for seg in segments:
            if seg.parent:
                _check_link(rep, root, seg, by_id)
        _check_queued(rep, segments, by_id)
    rep.verdict = _verdict(rep, roots[0])
    return rep


def _check_link(
    rep: ClusterReport, root: Path, child: _Segment, by_id: dict[str, _Segment]
) -> None:
    fail = rep.failures.append
    parent = by_id.get(child.parent)
    if parent is None or parent.key is None:
        fail(f"segment {child.id}: its parent {child.parent!r} is not in the index")
        return
    opening = child.records[:3]
    start = next((r for r in opening if r.get("kind") == SEGMENT_START), None)
    if start is None:
        fail(f"segment {child.id}: does not open with {SEGMENT_START}")
        return
    if (start.get("segment"), start.get("parent_segment"), start.get("parent_index")) != (
        child.id,
        child.parent,
        child.parent_index,
    ):
        fail(f"segment {child.id}: {SEGMENT_START} does not name its place in the index")
        return
    at = child.parent_index
    queued = parent.records[at] if 0 <= at < len(parent.records) else {}
    if queued.get("kind") != DELEGATION_QUEUED or queued.get("segment") != child.id:
        fail(f"segment {child.id}: record {at} of {parent.id} is not its {DELEGATION_QUEUED}")
        return
    try:
        claims = loads_bounded(verify_envelope(start.get("lease"), parent.key, LEASE_PAYLOAD_TYPE))
    except ValueError as exc:
        fail(f"segment {child.id}: its delegated lease does not verify under {parent.id}: {exc}")
        return
    run_start = child.records[0] if child.records else {}
    granted = run_start.get("scopes") if run_start.get("kind") == RUN_START else None
    if not isinstance(claims, dict) or claims.get("run") != rep.run_id:
        fail(f"segment {child.id}: the delegated lease is not for run {rep.run_id}")
        return
    if not isinstance(granted, list) or not set(granted) <= set(claims.get("scopes") or ()):
        fail(f"segment {child.id}: runs with scopes beyond its delegated lease")
        return
    _check_outcome(rep, root, child, parent, queued)


def _check_outcome(
    rep: ClusterReport, root: Path, child: _Segment, parent: _Segment, queued: dict[str, Any]
) -> None:
    step = queued.get("step")
    ends = [
        r
        for r in parent.records
        if r.get("kind") in (DELEGATION_RETURNED, DELEGATION_LOST) and r.get("segment") == child.id
    ]
    if not ends:
        rep.warnings.append(
            f"segment {child.id}: {parent.id} recorded no outcome for step {step} "
            "(the delegating run stopped first)"
        )
        return
    end = ends[0]
    size = end.get("size")
    if end.get("kind") == DELEGATION_LOST:
        if type(size) is not int or size > len(child.records):
            rep.failures.append(
                f"segment {child.id}: {parent.id} recorded {size} durable records of a lost "
                f"worker, the segment holds {len(child.records)}"
            )
        else:
            rep.warnings.append(f"segment {child.id}: its worker was lost (outcome unknown)")
        return
    try:
        note = read_evidence_file(root / child.id / CHECKPOINT_NAME).decode("utf-8")
    except (OSError, ValueError):
        note = ""
    if size != len(child.records) or end.get("checkpoint") != note:
        rep.failures.append(
            f"segment {child.id}: {parent.id} committed to {size} records and a checkpoint "
            f"the segment does not match ({len(child.records)} records)"
        )


def _check_queued(rep: ClusterReport, segments: list[_Segment], by_id: dict[str, _Segment]) -> None:
    for seg in segments:
        for r in seg.records:
            if r.get("kind") == DELEGATION_QUEUED and r.get("segment") not in by_id:
                rep.warnings.append(
                    f"{seg.id} queued segment {r.get('segment')!r}, which no worker opened"
                )


def _verdict(rep: ClusterReport, root_seg: _Segment) -> Verdict:
    if rep.failures:
        return "invalid"
    root_report = rep.segments.get(root_seg.id)
    if root_report is None or root_report.verdict != "verified":
        return "incomplete"
    return "verified"
