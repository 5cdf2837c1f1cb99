"""The evidence ledger writer: hash-chained JSON lines, a Merkle tree, signed checkpoints.

Layout of a run directory (declared in :mod:`._format`): ``ledger.jsonl`` (one
``record_bytes`` record per ``\\n``-terminated line), ``checkpoint`` (the latest C2SP
signed checkpoint, origin ``tenure.local/<run_id>``), ``tenure.pub`` (the public key), and
outside it ``<witness_dir>/<run_id>.checkpoint`` (a copy of the latest checkpoint).

Invariants, each with its own ``raise``:

- Append only: a record's ``i`` is its line number, ``prev`` the hex leaf hash of record
  ``i-1`` (64 zeros for ``i=0``); the Merkle tree (RFC 9162, :class:`CompactTree`, O(log n)
  memory) covers every line. Nothing is kept per record: memory stays flat.
- ``append(..., flush=True)`` returns only once the line (and any earlier buffered lines)
  was handed to the OS with ``os.write``; with ``fsync="record"`` it is also on disk.
- A checkpoint never covers a record the OS has not received, and with any fsync policy
  but ``"never"`` the ledger is fsynced before a checkpoint file naming it is published.
  Checkpoint files are replaced atomically (temp, rename): the run directory first, then
  the witness copy, so a crash can leave the witness behind, never ahead.
- Group commit: with ``fsync="checkpoint"`` (the default) the only fsync is the ledger
  file's, once per checkpoint (a trivial run pays exactly one, at close); directory
  entries and checkpoint files are left to the filesystem's journal, and a checkpoint file
  lost in a crash only weakens rollback detection, never hides tampering.
  ``fsync="record"`` fsyncs every record, every checkpoint file and every directory.
- Background publication: with :attr:`Ledger.background` set (the runtime sets it: a
  worker thread) a checkpoint is signed and appended where it is triggered, and its fsync
  and the publication of its note run in the background: the caller (the event loop) never
  waits for the disk. The order per file is kept (fsync, then checkpoint file, then
  witness) and so is "never ahead": a note is published only after an fsync that began
  after every record it signs was handed to the OS, notes are published in increasing size
  only, and :meth:`Ledger.commit` waits for a publication under way. A background failure
  fails the ledger (the next append raises) and makes :meth:`Ledger.commit` raise it.
- Any ``OSError`` on the ledger, checkpoint or witness files raises
  :class:`GovernanceUnavailable` (check ``ledger.append`` / ``ledger.fsync`` /
  ``ledger.checkpoint`` / ``ledger.witness``) and leaves the ledger *failed*: every later
  call raises the same error. A failed fsync is never retried (fsyncgate: the kernel may
  have dropped the dirty pages and a second fsync would falsely succeed).
- :meth:`Ledger.close` leaves every record signed with one final signature: it appends a
  final ``checkpoint`` record for size ``n`` (unless the last record already is one), makes
  the ledger durable, and publishes that same note as the ``checkpoint`` file and witness
  copy (the note signs records ``0..n-1``; the checkpoint record ``n`` is the note itself).
  Closing is two steps a caller may split: :meth:`Ledger.seal` (the final record, handed
  to the OS; on the event loop) and :meth:`Ledger.commit` (fsync and publication; in a
  worker thread, where concurrent commits of many ledgers share the filesystem's journal
  commit). Nothing is appended after :meth:`Ledger.seal`.

All file I/O goes through a :class:`~._ledger_io.FileOps` object so tests can inject ENOSPC /
EIO; its configuration is :class:`~._ledger_io.LedgerConfig`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
from collections.abc import Callable
from hashlib import sha256
from pathlib import Path
from typing import Any

from .._errors import GovernanceUnavailable
from ..crypto import SigningKey, record_bytes
from ._copies import SharedCopy
from ._format import (
    CHECKPOINT,
    CHECKPOINT_NAME,
    LEDGER_NAME,
    PUBLIC_KEY_NAME,
    ZERO_HASH,
    valid_run_id,
    witness_path,
)
from ._ledger_io import FileOps, LedgerConfig, NoteFailed, describe, write_atomic, write_new
from ._merkle import CompactTree
from ._note import origin_for, sign_checkpoint

__all__ = ["Ledger"]

_RESERVED = frozenset({"i", "t", "kind", "prev", "trace", "span"})


def _wall_us() -> int:
    return time.time_ns() // 1000


class Ledger:
    """An open, append-only evidence ledger of one run (create with :meth:`create`)."""

    __slots__ = (
        "_background_failed",
        "_closed",
        "_cp_size",
        "_cp_time",
        "_dirty",
        "_every",
        "_failure",
        "_fd",
        "_final",
        "_fsync_checkpoint",
        "_fsync_record",
        "_in_checkpoint",
        "_interval",
        "_io_lock",
        "_key",
        "_last_kind",
        "_last_t",
        "_ops",
        "_origin",
        "_pending",
        "_prev",
        "_published",
        "_signed",
        "_tree",
        "background",
        "clock",
        "config",
        "path",
        "run_dir",
        "run_id",
        "witness_dir",
    )

    def __init__(
        self,
        run_dir: Path,
        run_id: str,
        key: SigningKey,
        config: LedgerConfig,
        witness_dir: Path | None,
        fd: int,
        ops: FileOps,
    ) -> None:
        self.run_dir = run_dir
        self.run_id = run_id
        self.path = run_dir / LEDGER_NAME
        self.config = config
        self.witness_dir = witness_dir
        self._key = key
        self._fd = fd
        self._ops = ops
        self._origin = origin_for(run_id)
        self._tree = CompactTree()
        self._prev = ZERO_HASH
        self._pending: list[bytes] = []
        self._dirty = False  # written but not fsynced
        self._failure: tuple[str, str] | None = None
        self._closed = False
        self._final: str | None = None  # the final note, published by commit()
        self._in_checkpoint = False
        self._every = config.checkpoint_every
        self._interval = config.checkpoint_interval
        self._fsync_record = config.fsync == "record"
        self._fsync_checkpoint = config.fsync != "never"
        self._cp_size = 0
        self._cp_time = time.monotonic()
        self._last_kind = ""
        self._last_t = 0
        #: source of each record's ``t`` (µs since the epoch); a run sets its own clock
        self.clock: Callable[[], int] = _wall_us
        #: runs a checkpoint's fsync and publication off the caller (``None``: in the
        #: caller); see the module docstring
        self.background: Callable[[Callable[[], None]], None] | None = None
        self._io_lock = threading.RLock()  # the descriptor's fsync, publication and close
        self._signed: tuple[int, str] | None = None  # the newest (size, note) to publish
        self._published = 0  # the size of the newest note published
        self._background_failed = False

    # ------------------------------------------------------------------ creation
    @classmethod
    def create(
        cls,
        run_dir: Path,
        run_id: str,
        key: SigningKey,
        config: LedgerConfig | None = None,
        witness_dir: Path | None = None,
        *,
        file_ops: FileOps | None = None,
        key_copy: SharedCopy | None = None,
    ) -> Ledger:
        """Create ``run_dir`` with a fresh ``ledger.jsonl`` and ``tenure.pub``.

        ``key_copy`` (the key's PEM, shared by the runtime's runs) links ``tenure.pub`` to an
        earlier run's copy instead of writing a new file (see :mod:`._copies`).

        Raises ``ValueError`` for a run id that cannot be a directory and key name,
        ``FileExistsError`` if ``run_dir`` already holds a ledger, and
        :class:`GovernanceUnavailable` (check ``ledger.create``) on any other OS error.
        """
        if not valid_run_id(run_id):
            raise ValueError(f"run_id {run_id!r}: expected 1-128 characters of [A-Za-z0-9._-]")
        ops = file_ops if file_ops is not None else FileOps()
        config = config if config is not None else LedgerConfig()
        run_dir = Path(run_dir)
        path = run_dir / LEDGER_NAME
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            fd = ops.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            raise FileExistsError(f"{path}: the run directory already holds a ledger") from None
        except OSError as exc:
            raise GovernanceUnavailable(
                f"cannot create {path}: {describe(exc)}",
                run_id=run_id,
                check="ledger.create",
                source="ledger",
            ) from exc
        ledger = cls(run_dir, run_id, key, config, witness_dir, fd, ops)
        try:
            # A fresh run directory: a plain exclusive create is enough (no temp + rename).
            pub = run_dir / PUBLIC_KEY_NAME
            if key_copy is not None and key_copy.data == key.public_pem:
                key_copy.place(pub, ledger._write_new)
            else:
                ledger._write_new(pub, key.public_pem)
            if ledger._fsync_record:
                ops.fsync(fd)
                ops.fsync_dir(run_dir)
                ops.fsync_dir(run_dir.parent)
        except OSError as exc:
            ledger._fail("ledger.create", f"cannot initialise {run_dir}: {describe(exc)}")
            ledger._release()
            raise ledger._error() from exc
        return ledger

    # ------------------------------------------------------------------ state
    @property
    def size(self) -> int:
        """Number of records appended (including buffered ones)."""
        return self._tree.size

    @property
    def root(self) -> bytes:
        """The RFC 9162 root over all records appended so far."""
        return self._tree.root()

    @property
    def failed(self) -> bool:
        """True once an I/O error happened: every later append raises."""
        return self._failure is not None

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    def _fail(self, check: str, reason: str) -> None:
        if self._failure is None:
            self._failure = (check, reason)

    def _error(self) -> GovernanceUnavailable:
        assert self._failure is not None
        check, reason = self._failure
        return GovernanceUnavailable(
            f"evidence ledger unavailable: {reason}",
            run_id=self.run_id,
            check=check,
            source="ledger",
        )

    def _io_failed(self, check: str, what: Path, exc: OSError) -> GovernanceUnavailable:
        self._fail(check, f"{what}: {describe(exc)}")
        self._pending.clear()
        return self._error()

    # ------------------------------------------------------------------ appending
    def append(
        self,
        kind: str,
        fields: dict[str, Any],
        *,
        trace: str = "",
        span: str = "",
        flush: bool = True,
        owned: bool = False,
    ) -> int:
        """Append one record and return its index.

        ``owned``: the caller hands ``fields`` over; the common fields are added to it in
        place rather than to a copy (the runtime's step records: one dict fewer per
        record), so the caller must not use it afterwards.

        Raises :class:`GovernanceUnavailable` if the ledger failed (now or earlier),
        ``RuntimeError`` after :meth:`close`, ``ValueError`` if ``fields`` names a
        common field (``i``, ``t``, ``kind``, ``prev``, ``trace``, ``span``).
        """
        if self._failure is not None:
            raise self._error()
        if self._closed:
            raise RuntimeError(f"ledger {self.path} is closed")
        if not _RESERVED.isdisjoint(fields):
            raise ValueError(
                f"fields may not set common record fields: {sorted(_RESERVED & set(fields))}"
            )
        return self._append(kind, fields, trace, span, flush, None, owned)

    def _append(
        self,
        kind: str,
        fields: dict[str, Any],
        trace: str,
        span: str,
        flush: bool,
        t: int | None = None,
        owned: bool = False,
    ) -> int:
        i = self._tree._size
        if t is None:
            t = self.clock()
        if owned:  # the key order is free: the record's bytes are sorted
            rec = fields
            rec["i"] = i
            rec["t"] = t
            rec["kind"] = kind
            rec["prev"] = self._prev
            rec["trace"] = trace
            rec["span"] = span
        else:
            rec = {"i": i, "t": t, "kind": kind, "prev": self._prev, "trace": trace, "span": span}
            rec.update(fields)
        self._chain(record_bytes(rec), kind, t)
        if flush or self._fsync_record:
            self._flush()
            if self._fsync_record:
                self._sync()
        if not self._in_checkpoint and (
            i + 1 - self._cp_size >= self._every
            or (self._interval and time.monotonic() - self._cp_time >= self._interval)
        ):
            self.checkpoint()
        return i

    def _chain(self, line: bytes, kind: str, t: int) -> None:
        """Make ``line`` (a record's bytes, without its newline, time ``t``) the next record."""
        h = sha256(b"\x00" + line).digest()
        self._tree.append(h)
        self._prev = h.hex()
        self._last_kind = kind
        self._last_t = t
        self._pending.append(line + b"\n")

    def _flush(self) -> None:
        pending = self._pending
        if not pending:
            return
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        pending.clear()
        try:
            written = self._ops.write(self._fd, data)
            if written != len(data):  # a short write (rare): write the rest
                self._write_rest(memoryview(data), written)
        except OSError as exc:
            raise self._io_failed("ledger.append", self.path, exc) from exc
        self._dirty = True

    def _write_rest(self, view: memoryview, written: int) -> None:
        while True:
            if written <= 0:
                raise OSError(errno.EIO, "write returned 0 bytes")
            view = view[written:]
            if not view:
                return
            written = self._ops.write(self._fd, view)  # type: ignore[arg-type]

    def _sync(self) -> None:
        if not self._dirty:
            return
        try:
            self._ops.fsync(self._fd)
        except OSError as exc:
            raise self._io_failed("ledger.fsync", self.path, exc) from exc
        self._dirty = False

    def flush(self) -> None:
        """Hand every buffered record to the OS (and fsync with ``fsync="record"``)."""
        if self._failure is not None:
            raise self._error()
        self._flush()
        if self._fsync_record:
            self._sync()

    # ------------------------------------------------------------------ checkpoints
    def _write_new(self, path: Path, data: bytes) -> None:
        """Create ``path`` (which must not exist) with ``data``. Raises OSError."""
        write_new(self._ops, path, data, durable=self._fsync_record)

    def _publish(self, note: str) -> None:
        """Write the run directory's checkpoint file, then the witness copy."""
        try:
            self._write_note(note)
        except NoteFailed as failed:
            self._fail(failed.check, failed.reason)
            self._pending.clear()
            raise self._error() from failed.__cause__

    def _write_note(self, note: str) -> None:
        """:meth:`_publish` without touching the ledger's state (raises :class:`NoteFailed`)."""
        data = note.encode("utf-8")
        target = self.run_dir / CHECKPOINT_NAME
        try:
            write_atomic(self._ops, target, data, durable=self._fsync_record)
        except OSError as exc:
            raise NoteFailed("ledger.checkpoint", target, exc) from exc
        if self.witness_dir is not None:
            wpath = witness_path(self.witness_dir, self.run_id)
            try:
                try:
                    write_atomic(self._ops, wpath, data, durable=self._fsync_record)
                except FileNotFoundError:  # the first run under this evidence_dir
                    self.witness_dir.mkdir(parents=True, exist_ok=True)
                    write_atomic(self._ops, wpath, data, durable=self._fsync_record)
            except OSError as exc:
                raise NoteFailed("ledger.witness", wpath, exc) from exc

    def _durable(self) -> None:
        self._flush()
        if self._fsync_checkpoint:
            self._sync()

    def checkpoint(self) -> None:
        """Sign the current tree, publish it, and append it as a ``checkpoint`` record
        (published in the :attr:`background` when one is set, after the record)."""
        if self._failure is not None:
            raise self._error()
        if self._closed:
            raise RuntimeError(f"ledger {self.path} is closed")
        background = None if self._fsync_record else self.background
        self._in_checkpoint = True
        try:
            if background is None:
                self._durable()
            else:
                self._flush()  # the fsync that precedes publication begins after this
            size = self._tree.size
            root = self._tree.root()
            note = sign_checkpoint(self._origin, size, root, self._key)
            if background is None:
                self._publish(note)
                self._published = size
            self._cp_size = size
            self._cp_time = time.monotonic()
            fields = {"size": size, "root": root.hex(), "note": note}
            # A checkpoint record bears the time of the last record it signs: every byte of
            # it is then fixed by what it signs (see verify: the closing checkpoint).
            self._append(CHECKPOINT, fields, "", "", True, self._last_t)
        finally:
            self._in_checkpoint = False
        if background is not None:
            self._signed = (size, note)
            background(self._publish_signed)

    def _publish_signed(self) -> None:
        """In the background: fsync, then publish the newest signed note (if still newer
        than the one published). Raises :class:`GovernanceUnavailable` on failure."""
        with self._io_lock:
            signed = self._signed
            if signed is None or self._fd < 0 or self._failure is not None:
                return
            size, note = signed
            if size <= self._published:
                return
            try:
                if self._fsync_checkpoint:
                    try:
                        self._ops.fsync(self._fd)
                    except OSError as exc:
                        raise NoteFailed("ledger.fsync", self.path, exc) from exc
                self._write_note(note)
            except NoteFailed as failed:
                self._background_failed = True
                self._fail(failed.check, failed.reason)
                raise self._error() from failed.__cause__
            except Exception as exc:  # whatever failed, the note is not known to be durable
                self._background_failed = True
                self._fail("ledger.checkpoint", f"publishing checkpoint {size} failed: {exc!r}")
                raise self._error() from exc
            self._published = size

    def close(self) -> None:
        """Final checkpoint covering every record, fsync, close. Idempotent.

        After an I/O failure it only releases the file (nothing more is written).
        """
        if self._closed and self._fd < 0:
            return
        self.seal()
        self.commit()

    def seal(self) -> None:
        """Append the final checkpoint (one signature) and hand every record to the OS.

        Nothing is appended afterwards; :meth:`commit` makes it durable and publishes it.
        Raises :class:`GovernanceUnavailable` on an I/O failure (the file is released).
        """
        if self._closed:
            return
        self._closed = True
        if self._failure is not None:
            self._release()
            return
        try:
            self._in_checkpoint = True
            if self._tree.size and self._last_kind != CHECKPOINT:
                size = self._tree.size
                root = self._tree.root()
                note = sign_checkpoint(self._origin, size, root, self._key)
                fields = {"size": size, "root": root.hex(), "note": note}
                self._append(CHECKPOINT, fields, "", "", False, self._last_t)
                self._final = note
            self._flush()
        except BaseException:
            self._release()
            raise
        finally:
            self._in_checkpoint = False

    def commit(self) -> None:
        """After :meth:`seal`: fsync (unless ``fsync="never"``), publish the final note as
        the checkpoint file and witness copy, release the file. Safe in a worker thread."""
        with self._io_lock:  # after a background publication under way
            if self._background_failed:  # the run may not have heard of it yet
                self._release()
                raise self._error()
            if self._fd < 0:
                return
            try:
                if self._failure is None:
                    if self._fsync_checkpoint:
                        self._sync()
                    final = self._final
                    if final is None and self._signed is not None:
                        # The last record is a checkpoint whose publication is still queued.
                        final = self._signed[1] if self._signed[0] > self._published else None
                    if final is not None:
                        self._publish(final)
            finally:
                self._release()

    def abort(self, check: str, reason: str) -> None:
        """Give the ledger up without writing to it again (its run never starts)."""
        self._fail(check, reason)
        self._release()

    def _release(self) -> None:
        self._closed = True
        self._pending.clear()
        with self._io_lock:  # never under a background fsync of the same descriptor
            if self._fd < 0:
                return
            fd, self._fd = self._fd, -1
            with contextlib.suppress(OSError):
                self._ops.close(fd)

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "failed" if self.failed else "closed" if self._closed else "open"
        return f"<Ledger {self.path} size={self.size} {state}>"
