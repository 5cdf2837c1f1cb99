"""The ledger's configuration and its door to the file system.

:class:`LedgerConfig` says how often a ledger checkpoints and when it fsyncs;
:class:`FileOps` is the only way it touches files (tests replace it to inject ENOSPC or
EIO); :func:`write_new` and :func:`write_atomic` are the whole-file writes of a run's key
copy, checkpoint file and witness copy.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = [
    "FileOps",
    "FsyncPolicy",
    "LedgerConfig",
    "NoteFailed",
    "describe",
    "write_atomic",
    "write_new",
]

FsyncPolicy = Literal["record", "checkpoint", "never"]


@dataclass(frozen=True, slots=True)
class LedgerConfig:
    """How often to checkpoint and when to fsync.

    Attributes:
        checkpoint_every: sign a checkpoint after this many records (>= 1).
        checkpoint_interval: ... or when this many seconds passed since the last one
            (checked on append; ``0`` disables the time trigger).
        fsync: ``"record"`` fsyncs after every write, ``"checkpoint"`` before each
            checkpoint and at close, ``"never"`` leaves durability to the OS (a crash may
            then lose records a checkpoint covers, which verifies as truncation).
    """

    checkpoint_every: int = 1000
    checkpoint_interval: float = 1.0
    fsync: FsyncPolicy = "checkpoint"

    def __post_init__(self) -> None:
        if not isinstance(self.checkpoint_every, int) or self.checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be an int >= 1, got {self.checkpoint_every!r}")
        if self.checkpoint_interval < 0:
            raise ValueError(
                f"checkpoint_interval must be >= 0 seconds, got {self.checkpoint_interval!r}"
            )
        if self.fsync not in ("record", "checkpoint", "never"):
            raise ValueError(f"fsync must be 'record', 'checkpoint' or 'never', got {self.fsync!r}")


class FileOps:
    """The ledger's only door to the file system (replace in tests to inject faults)."""

    def open(self, path: Path, flags: int, mode: int = 0o644) -> int:
        """``os.open``."""
        return os.open(path, flags, mode)

    def write(self, fd: int, data: bytes) -> int:
        """``os.write``."""
        return os.write(fd, data)

    def fsync(self, fd: int) -> None:
        """``os.fsync``."""
        os.fsync(fd)

    def close(self, fd: int) -> None:
        """``os.close``."""
        os.close(fd)

    def replace(self, src: Path, dst: Path) -> None:
        """``os.replace`` (atomic rename)."""
        os.replace(src, dst)

    def fsync_dir(self, path: Path) -> None:
        """Make a directory's entries durable."""
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            self.fsync(fd)
        finally:
            os.close(fd)


def describe(exc: OSError) -> str:
    """An OS error as ``ERRNO: message``."""
    code = errno.errorcode.get(exc.errno, str(exc.errno)) if exc.errno else "?"
    return f"{code}: {exc.strerror or exc}"


class NoteFailed(Exception):
    """Publishing a checkpoint note failed (``check``; ``reason`` names the file)."""

    def __init__(self, check: str, what: Path, exc: OSError) -> None:
        super().__init__(check)
        self.check = check
        self.reason = f"{what}: {describe(exc)}"


def _write_file(ops: FileOps, path: Path, flags: int, data: bytes, durable: bool) -> None:
    fd = ops.open(path, os.O_WRONLY | flags, 0o644)
    try:
        view = memoryview(data)
        while view:
            written = ops.write(fd, view)  # type: ignore[arg-type]
            if written <= 0:
                raise OSError(errno.EIO, "write returned 0 bytes")
            view = view[written:]
        if durable:
            ops.fsync(fd)
    finally:
        ops.close(fd)


def write_new(ops: FileOps, path: Path, data: bytes, *, durable: bool) -> None:
    """Create ``path`` (which must not exist) with ``data`` (fsynced if ``durable``).
    Raises OSError."""
    _write_file(ops, path, os.O_CREAT | os.O_EXCL, data, durable)


def write_atomic(ops: FileOps, path: Path, data: bytes, *, durable: bool) -> None:
    """temp file -> write -> rename (with fsyncs of the file and its folder if ``durable``).
    Raises OSError."""
    tmp = path.with_name(f".{path.name}.tmp")
    _write_file(ops, tmp, os.O_CREAT | os.O_TRUNC, data, durable)
    ops.replace(tmp, path)
    if durable:
        ops.fsync_dir(path.parent)
