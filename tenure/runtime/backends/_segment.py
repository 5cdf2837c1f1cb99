"""A run's ledger mirrored, record for record, into an evidence segment of the backend.

The ledger writer is unchanged: it computes the hash chain, the RFC 9162 tree and the
signed checkpoints and writes the run directory as always. :class:`MirrorOps` (the
ledger's :class:`~tenure.evidence._ledger.FileOps`) also keeps every line the ledger hands
the OS and every checkpoint it publishes; :class:`SegmentWriter` ships them to the
backend. The engine ships before each step's body runs (``RunServices.after_start``), so a
step never runs without its ``step.start`` committed in the shared database, and the last
records when the run ends. The segment is then the same bytes as the run directory's
ledger: an export writes them back and the offline verifier checks them as any run.

Invariants:

- A segment is written by the member (and generation) that opened it: after that member
  was declared lost, every later batch is refused (fenced), so a paused worker that
  resumes adds nothing to its segment.
- A batch is sent at the segment's durable size; after a failed commit the writer reads
  that size back (the commit may have landed without its acknowledgement) before sending
  again, so no record is lost, doubled or reordered.
"""

from __future__ import annotations

from pathlib import Path

import anyio

from ..._errors import GovernanceUnavailable, GovernanceViolation
from ...evidence._format import CHECKPOINT_NAME, LEDGER_NAME
from ...evidence._ledger import FileOps
from ._protocols import Backend
from ._types import Batch, Member, SegmentInfo

__all__ = ["MirrorOps", "SegmentWriter"]


class MirrorOps(FileOps):
    """File operations that also keep the ledger's lines and published checkpoints."""

    def __init__(self) -> None:
        self._ledger_fd: int | None = None
        self._run_dir: Path | None = None
        self._partial = b""
        self._files: dict[int, tuple[Path, list[bytes]]] = {}
        self._written: dict[Path, bytes] = {}
        #: complete lines not yet shipped, in order
        self.lines: list[bytes] = []
        #: the latest checkpoint note published in the run directory
        self.checkpoint: str | None = None

    def open(self, path: Path, flags: int, mode: int = 0o644) -> int:
        fd = super().open(path, flags, mode)
        if path.name == LEDGER_NAME and self._ledger_fd is None:
            self._ledger_fd, self._run_dir = fd, path.parent
        else:
            self._files[fd] = (path, [])
        return fd

    def write(self, fd: int, data: bytes) -> int:
        written = super().write(fd, data)
        chunk = bytes(data[:written])
        if fd == self._ledger_fd:
            *complete, self._partial = (self._partial + chunk).split(b"\n")
            self.lines.extend(line + b"\n" for line in complete)
        elif fd in self._files:
            self._files[fd][1].append(chunk)
        return written

    def close(self, fd: int) -> None:
        entry = self._files.pop(fd, None)
        if entry is not None:
            self._written[entry[0]] = b"".join(entry[1])
        super().close(fd)

    def replace(self, src: Path, dst: Path) -> None:
        super().replace(src, dst)
        data = self._written.pop(src, None)
        if data is not None and dst.name == CHECKPOINT_NAME and dst.parent == self._run_dir:
            self.checkpoint = data.decode("utf-8")


class SegmentWriter:
    """Ships one run's mirrored ledger to its backend segment (see the module docstring)."""

    def __init__(self, backend: Backend, member: Member, info: SegmentInfo, ops: MirrorOps):
        if info.member != member.id:
            raise ValueError(f"segment {info.id} is not written by member {member.id}")
        self.backend = backend
        self.member = member
        self.info = info
        self.ops = ops
        self.shipped = 0
        self._lock = anyio.Lock()

    async def open(self) -> None:
        """Create the (empty) segment in the backend."""
        await self.backend.evidence.open_segment(self.member, self.info)

    async def ship(self) -> None:
        """Commit every line kept so far (raises ``GovernanceUnavailable`` if it cannot).

        A failed commit is reconciled and sent once more: a connection the server dropped
        (a restart) fails one call, and the second goes out on a fresh one.
        """
        async with self._lock:
            for attempt in (1, 2):
                try:
                    await self._send()
                    return
                except GovernanceViolation as exc:
                    if exc.check == "backend.fenced" or attempt == 2:
                        raise
                    await self._reconcile()

    async def _send(self) -> None:
        ops = self.ops
        if not ops.lines and ops.checkpoint is None:
            return
        lines, note = tuple(ops.lines), ops.checkpoint
        await self.backend.evidence.commit(
            self.member, Batch(self.info.id, self.shipped, lines, checkpoint=note)
        )
        del ops.lines[: len(lines)]
        if ops.checkpoint == note:
            ops.checkpoint = None
        self.shipped += len(lines)

    async def _reconcile(self) -> None:
        """After a failed commit: learn whether it landed, and drop what did."""
        try:
            size = await self.backend.evidence.size(self.info.id)
        except GovernanceViolation:
            return  # still unknown: the next send is refused if it would overwrite
        landed = size - self.shipped
        if 0 < landed <= len(self.ops.lines):
            del self.ops.lines[:landed]
            self.shipped = size  # a note sent with them is sent again: stored, harmless

    async def ship_or_stop(self) -> None:
        """Ship; a failure is a governance failure of the run (the step must not start)."""
        try:
            await self.ship()
        except GovernanceViolation as exc:
            raise GovernanceUnavailable(
                f"evidence segment {self.info.id} could not be made durable in the "
                f"backend: {exc.reason}",
                check="evidence.segment",
                source="backend",
            ) from exc
