"""A run's ledger mirrored, record for record, into an evidence segment of the backend.

The ledger writer computes the hash chain, the RFC 9162 tree and the signed checkpoints
and writes the run directory as always. :class:`MirrorOps` (the ledger's
:class:`~tenure.evidence._ledger_io.FileOps`) also keeps every line the ledger hands the OS
and every checkpoint it publishes; :class:`SegmentWriter` ships them to the backend. The
segment is then the same bytes as the run directory's ledger: an export writes them back
and the offline verifier checks them as any run.

A step's start is one transaction (:meth:`SegmentWriter.start`): the records so far, the
``step.start`` and the step's debit of the run's shared budget (counters, rate windows,
live tasks). Refused, the transaction appends instead the record that the step did not
start — both continuations come from one ledger fork (:mod:`tenure.evidence._fork`), and
the ledger chains the one the backend kept. So a step never runs without its ``step.start``
and its debit committed together, and no ``step.start`` is ever committed without its
debit. The last records are shipped when the run ends.

Invariants:

- A segment is written by the member (and generation) that opened it: after that member
  was declared lost, every later batch is refused (fenced), so a paused worker that
  resumes adds nothing to its segment.
- A batch is sent at the segment's durable size; after a failed commit the writer reads
  that size back (the commit may have landed without its acknowledgement): landed, it is
  not sent again (nor its debit taken twice — they were one transaction); not landed, it
  is sent once more. No record is lost, doubled or reordered.
- A step's start whose outcome is still unknown when this process's authority ends is
  chained here as not started and the step does not run; before anything more is shipped
  the writer reads back what the backend kept, and if that was the start, it ships nothing
  more (the segment ends there, verifiably cut short) rather than a chain that forks.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio

from ..._errors import GovernanceUnavailable, GovernanceViolation
from ...evidence._fork import ForkingLedger
from ...evidence._format import CHECKPOINT_NAME, DECISION, LEDGER_NAME, STEP_START
from ...evidence._ledger_io import FileOps
from ._protocols import Backend
from ._types import Batch, Debit, Member, Refusal, SegmentInfo

__all__ = ["NOT_STARTED_RULE", "MirrorOps", "SegmentWriter"]

#: the rule of the ``decision`` record that stands where a step's start was not committed
NOT_STARTED_RULE = "backend.start"
_NOT_STARTED = (
    "the step did not start: the shared backend did not commit its start together with its "
    "budget debit (the record that follows says why)"
)


class MirrorOps(FileOps):
    """File operations that also keep the ledger's lines and published checkpoints."""

    def __init__(self) -> None:
        self._ledger_fd: int | None = None
        self._run_dir: Path | None = None
        self._partial = b""
        self._files: dict[int, tuple[Path, list[bytes]]] = {}
        self._written: dict[Path, bytes] = {}
        self._ahead: deque[bytes] = deque()
        #: complete lines not yet shipped, in order
        self.lines: list[bytes] = []
        #: the latest checkpoint note published in the run directory
        self.checkpoint: str | None = None

    def shipped_ahead(self, line: bytes) -> None:
        """``line`` is in the segment already (it went with a step's start): when the
        ledger writes it, it is not kept to be shipped again."""
        self._ahead.append(line)

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
            ahead = self._ahead
            for line in complete:
                kept = line + b"\n"
                if ahead and ahead[0] == kept:
                    ahead.popleft()
                else:
                    self.lines.append(kept)
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


def _segment_error(info: SegmentInfo, why: str) -> GovernanceUnavailable:
    return GovernanceUnavailable(
        f"evidence segment {info.id} could not be made durable in the backend: {why}",
        check="evidence.segment",
        source="backend",
    )


class SegmentWriter:
    """Ships one run's mirrored ledger to its backend segment (see the module docstring)."""

    def __init__(
        self,
        backend: Backend,
        member: Member,
        info: SegmentInfo,
        ops: MirrorOps,
        ledger: ForkingLedger,
    ) -> None:
        if info.member != member.id:
            raise ValueError(f"segment {info.id} is not written by member {member.id}")
        self.backend = backend
        self.member = member
        self.info = info
        self.ops = ops
        self.ledger = ledger
        self.shipped = 0
        #: steps of this segment counted in the run's live governed tasks
        self.entered: set[str] = set()
        #: how many of them ended since the last commit (released by the next one)
        self.leaves = 0
        self._lock = anyio.Lock()
        # A commit failed and what landed of it is not known yet: read back before sending
        # more; and if it was a step's start chained here as not started, its index and line.
        self._unsure = False
        self._unsure_start: tuple[int, bytes] | None = None
        self._diverged = False

    @property
    def diverged(self) -> bool:
        """Whether the backend kept a start this ledger records as not started (then
        nothing more is shipped: the segment ends there)."""
        return self._diverged

    async def open(self) -> None:
        """Create the (empty) segment in the backend."""
        await self.backend.evidence.open_segment(self.member, self.info)

    def left(self, step: str) -> None:
        """A step of this segment ended: its live task is released with the next commit."""
        if step in self.entered:
            self.entered.discard(step)
            self.leaves += 1

    async def ship(self, *, close: bool = False) -> None:
        """Commit every line kept so far (raises ``GovernanceUnavailable`` if it cannot);
        ``close``: the segment's last commit, releasing all its live tasks.

        A failed commit is reconciled and sent once more: a connection the server dropped
        (a restart) fails one call, and the second goes out on a fresh one.
        """
        async with self._lock:
            for attempt in (1, 2):
                await self._know()
                ops = self.ops
                release = close and bool(self.entered or self.leaves)
                if not ops.lines and ops.checkpoint is None and not self.leaves and not release:
                    return
                lines, note, leave = tuple(ops.lines), ops.checkpoint, self.leaves
                batch = Batch(self.info.id, self.shipped, lines, note, leave=leave, close=release)
                try:
                    await self._commit(batch, None)
                except GovernanceViolation as exc:
                    if exc.check == "backend.fenced" or attempt == 2:
                        raise
                    continue
                self._shipped(len(lines), note, leave)
                return

    async def ship_or_stop(self) -> None:
        """Ship; a failure is a governance failure of the run (the step must not start)."""
        try:
            await self.ship()
        except GovernanceViolation as exc:
            raise _segment_error(self.info, exc.reason) from exc

    async def start(
        self,
        step: str,
        fields: Mapping[str, Any],
        debit: Debit | None,
        *,
        trace: str,
        span: str,
        deadline: float,
    ) -> Refusal | None:
        """Commit a step's ``step.start`` with its debit in one transaction (see the module
        docstring); the debit's refusal, if any (the step then did not start).

        ``deadline`` (``anyio.current_time()`` scale) is when this process's authority
        ends: an answer that has not come by then is unknown, and the step does not run.
        Raises ``GovernanceUnavailable`` (check ``evidence.segment``) when the start could
        not be committed, and the ledger's own error when the ledger failed.
        """
        async with self._lock:
            try:
                await self._know()
            except GovernanceViolation as exc:
                raise _segment_error(self.info, exc.reason) from exc
            if debit is not None and debit.refusable:
                return await self._start_forked(step, fields, debit, trace, span, deadline)
            # Nothing can refuse it: one continuation, counted with the commit.
            index = self.ledger.append(STEP_START, dict(fields), trace=trace, span=span)
            with anyio.CancelScope(shield=True) as scope:
                scope.deadline = deadline
                for attempt in (1, 2):
                    try:
                        await self._know()
                        if self.shipped > index:
                            break  # it landed, its count with it (one transaction)
                        ops = self.ops
                        lines, note, leave = tuple(ops.lines), ops.checkpoint, self.leaves
                        batch = Batch(self.info.id, self.shipped, lines, note, leave=leave)
                        await self._commit(batch, debit)
                        self._shipped(len(lines), note, leave)
                        break
                    except GovernanceViolation as exc:
                        if exc.check == "backend.fenced" or attempt == 2:
                            raise _segment_error(self.info, exc.reason) from exc
            if scope.cancelled_caught:
                raise _segment_error(self.info, "no answer while this process held authority")
            if debit is not None and debit.enter:
                self.entered.add(step)
            return None

    async def _start_forked(
        self,
        step: str,
        fields: Mapping[str, Any],
        debit: Debit,
        trace: str,
        span: str,
        deadline: float,
    ) -> Refusal | None:
        ledger, ops = self.ledger, self.ops
        not_started = {**_not_started(fields), "reason": _NOT_STARTED}
        index, yes, no = ledger.fork(
            (STEP_START, dict(fields)), (DECISION, not_started), trace=trace, span=span
        )
        lines, note, leave = tuple(ops.lines), ops.checkpoint, self.leaves
        batch = Batch(self.info.id, self.shipped, (*lines, yes), note, (*lines, no), leave=leave)
        kept: bytes | None = None
        refusal: Refusal | None = None
        why = "no answer while this process held authority"
        try:
            with anyio.CancelScope(shield=True) as scope:
                scope.deadline = deadline
                for attempt in (1, 2):
                    try:
                        refusal = await self._commit(batch, debit)
                        kept = no if refusal is not None else yes
                        break
                    except GovernanceViolation as exc:
                        why = exc.reason
                        if exc.check == "backend.fenced" or attempt == 2:
                            break
                        found = await self._landed(batch, yes, no)
                        if found is None:
                            continue  # it did not land: once more (a fresh connection)
                        kept, refusal = found
                        break
        except GovernanceViolation as exc:  # the read-back failed too: still unknown
            why = exc.reason
        except BaseException:
            ledger.settle(1)
            self._unsure, self._unsure_start = True, (index, no)
            raise
        if kept is None:
            ledger.settle(1)  # here, the step did not start (it does not run)
            if self._unsure:
                self._unsure_start = (index, no)
            raise _segment_error(self.info, why)
        self._unsure = False
        del ops.lines[: len(lines)]
        ops.shipped_ahead(kept)
        self._shipped(0, note, leave, extra=len(lines) + 1)
        ledger.settle(0 if kept is yes else 1)
        if refusal is None and debit.enter:
            self.entered.add(step)
        return refusal

    async def _landed(
        self, batch: Batch, yes: bytes, no: bytes
    ) -> tuple[bytes, Refusal | None] | None:
        """After a failed start commit: which continuation the backend kept (``None``: it
        kept nothing); raises when that is still unknown."""
        evidence = self.backend.evidence
        size = await evidence.size(self.info.id)
        if size == batch.first:
            self._unsure = False
            return None
        if size == batch.first + len(batch.lines):
            last = (await evidence.records(self.info.id))[0][size - 1]
            if last == yes:
                return yes, None
            if last == no:
                lost = "its reason was lost with the backend's acknowledgement"
                return no, Refusal("budget.shared", f"the run's shared budget refused it ({lost})")
        raise _segment_error(self.info, f"the backend holds {size} records, not {batch.first}")

    async def _commit(self, batch: Batch, debit: Debit | None) -> Refusal | None:
        try:
            return await self.backend.evidence.commit(self.member, batch, debit)
        except GovernanceViolation as exc:
            if exc.check != "backend.fenced":  # fenced: refused whole, nothing landed
                self._unsure = True
            raise
        except BaseException:  # cancelled mid-commit: it may have landed
            self._unsure = True
            raise

    def _shipped(self, count: int, note: str | None, leave: int, extra: int = 0) -> None:
        """Forget what the backend now holds: ``count`` kept lines (``extra`` lines that
        were never kept), the checkpoint sent, ``leave`` released tasks."""
        ops = self.ops
        del ops.lines[:count]
        if ops.checkpoint == note:
            ops.checkpoint = None
        self.shipped += count + extra
        self.leaves -= leave

    async def _know(self) -> None:
        """Before sending: after a commit whose outcome is unknown, read back what landed
        and forget it (raises while that cannot be read)."""
        if self._diverged:
            raise self._diverged_error()
        if not self._unsure:
            return
        evidence = self.backend.evidence
        size = await evidence.size(self.info.id)
        start = self._unsure_start
        if (
            start is not None
            and size > start[0]
            and (await evidence.records(self.info.id))[0][start[0]] != start[1]
        ):
            self._diverged = True
            raise self._diverged_error()
        landed = size - self.shipped
        if not 0 <= landed <= len(self.ops.lines):
            self._diverged = True
            raise self._diverged_error()
        del self.ops.lines[:landed]
        self.shipped = size
        self._unsure, self._unsure_start = False, None

    def _diverged_error(self) -> GovernanceUnavailable:
        return _segment_error(
            self.info,
            "the backend holds records this ledger does not (a step's start it kept that "
            "was not acknowledged in time): nothing more is shipped, the segment ends there",
        )


def _not_started(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The ``decision`` fields that stand for a step whose start was not committed."""
    return {
        "step": fields["step"],
        "lease": fields["lease"],
        "action": fields["action"],
        "target": fields["target"],
        "caller": "",
        "effect": "deny",
        "rule": NOT_STARTED_RULE,
        "args": fields["args"],
    }
