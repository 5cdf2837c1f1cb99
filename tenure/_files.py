"""Reading files whose content, type or size someone else chooses, without trusting them.

Policy files, revocation requests and approval files are named by configuration or dropped
by other processes: such a file may be a FIFO (an open for reading would block until a
writer comes), a device (``/dev/zero`` never ends), a huge or sparse file, or a symlink to
any of these. A read here never blocks on open (``O_NONBLOCK``: a FIFO opens at once),
reads only a regular file (checked with ``fstat`` on what was opened, not on the name) and
never more than its bound; with ``follow_symlinks=False`` a symlink is refused
(``O_NOFOLLOW``) for folders anyone may drop files into.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Final

__all__ = ["NotRegular", "open_regular", "read_regular_file"]

_FLAGS: Final = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC


class NotRegular(ValueError):
    """What was opened is not a regular file (``kind`` says what it is: "a FIFO", ...)."""

    def __init__(self, kind: str) -> None:
        super().__init__(f"not a regular file ({kind}; a FIFO, a device or a socket is never read)")
        self.kind = kind


def open_regular(path: Path, *, follow_symlinks: bool = True) -> int:
    """Open ``path`` read-only without blocking and return the descriptor (blocking mode
    restored); :class:`NotRegular` if it is not a regular file. ``OSError`` propagates
    (``ELOOP`` for a symlink when ``follow_symlinks`` is false)."""
    fd = os.open(path, _FLAGS if follow_symlinks else _FLAGS | os.O_NOFOLLOW)
    try:
        mode = os.fstat(fd).st_mode  # what was opened, not what the name pointed at before
        if not stat.S_ISREG(mode):
            raise NotRegular(_kind(mode))
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular_file(path: Path, limit: int, what: str, *, follow_symlinks: bool = False) -> bytes:
    """The bytes of ``path``; ``ValueError`` if it is not a regular file of at most ``limit``.

    ``OSError`` (``FileNotFoundError`` included, and ``ELOOP`` for a symlink when
    ``follow_symlinks`` is false) propagates.
    """
    fd = open_regular(path, follow_symlinks=follow_symlinks)
    try:
        size = os.fstat(fd).st_size
        if size > limit:
            raise ValueError(f"{size} bytes, more than the {limit} {what} may hold")
        data = b""
        while len(data) <= limit:  # os.read may return less than asked of a regular file
            chunk = os.read(fd, limit + 1 - len(data))
            if not chunk:
                break
            data += chunk
    finally:
        os.close(fd)
    if len(data) > limit:  # grew after the fstat
        raise ValueError(f"more than the {limit} bytes {what} may hold")
    return data


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a directory"
    return "not a regular file"
