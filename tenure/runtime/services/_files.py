"""Reading files that other processes drop into a folder the runtime watches.

Anyone who can write the folder chooses what the runtime opens, so a read here never
follows a symlink (``O_NOFOLLOW``), never blocks on open (``O_NONBLOCK``: a FIFO opens at
once), reads only a regular file (checked with ``fstat`` on what was opened) and never more
than its bound.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Final

__all__ = ["read_small_file", "write_atomically"]

_OPEN_FLAGS: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def read_small_file(path: Path, limit: int, what: str) -> bytes:
    """The bytes of ``path``; ``ValueError`` if it is not a regular file of at most ``limit``.

    ``OSError`` (``FileNotFoundError`` included, and ``ELOOP`` for a symlink) propagates.
    """
    fd = os.open(path, _OPEN_FLAGS)  # a symlink: ELOOP; a FIFO: opens without blocking
    try:
        st = os.fstat(fd)  # what was opened, not what the name pointed at before
        if not stat.S_ISREG(st.st_mode):
            raise ValueError("not a regular file (symlinks, FIFOs and devices are never read)")
        if st.st_size > limit:
            raise ValueError(f"{st.st_size} bytes, more than the {limit} {what} may hold")
        data = os.read(fd, limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:  # grew after the fstat
        raise ValueError(f"more than the {limit} bytes {what} may hold")
    return data


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename (readers see it whole)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    tmp.write_bytes(data)
    os.replace(tmp, path)
