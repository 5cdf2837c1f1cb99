"""Files that many run directories hold byte for byte: written once, then hard-linked.

Every run directory carries a copy of the runtime's public key (``tenure.pub``) and of the
attestation statement its runs share (``attestation.intoto.json``). Creating a file is the
dearest thing a run asks of the file system (a new inode: on a busy ext4 volume hundreds of
microseconds of kernel time, more than the rest of a trivial run's setup), so after the first
copy each further one is a hard link to it: a directory entry, no new inode, no data written.

Invariants:

- A link is kept only if what it names is the very file this process wrote (regular file,
  same device, inode, size and modification time as right after the write); anything else
  (the source deleted, replaced, a symlink put in its place, another file system, too many
  links, a file system without hard links) is undone or skipped and the copy written afresh,
  which becomes the next source.
- Readers never depend on the link: each directory's copy is a complete file with the same
  bytes, verified like any other (a hard link is just a second name of it).
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable
from pathlib import Path

__all__ = ["SharedCopy"]

_Ident = tuple[int, int, int, int]  # st_dev, st_ino, st_size, st_mtime_ns


def _ident(st: os.stat_result) -> _Ident:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class SharedCopy:
    """The bytes of a file many run directories hold, and the copy later ones link to.

    Safe to use from several threads: two threads that both write afresh each leave a
    complete copy, and one of them becomes the source.
    """

    __slots__ = ("_source", "data")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self._source: tuple[Path, _Ident] | None = None

    def place(self, target: Path, write_new: Callable[[Path, bytes], object]) -> bool:
        """Create ``target`` with :attr:`data`: a hard link to the last copy, or written by
        ``write_new(target, data)`` (which must create it exclusively). Returns whether it
        was linked. ``OSError`` from ``write_new`` propagates."""
        source = self._source
        if source is not None and self._link(source, target):
            return True
        write_new(target, self.data)
        with contextlib.suppress(OSError):  # no source for the next one: it writes too
            st = os.lstat(target)
            if stat.S_ISREG(st.st_mode) and st.st_size == len(self.data):
                self._source = (target, _ident(st))
        return False

    @staticmethod
    def _link(source: tuple[Path, _Ident], target: Path) -> bool:
        path, ident = source
        try:
            os.link(path, target, follow_symlinks=False)
        except OSError:  # gone, moved, EXDEV, EMLINK, EPERM (no hard links here)
            return False
        try:
            st = os.lstat(target)
            if stat.S_ISREG(st.st_mode) and _ident(st) == ident:
                return True
            os.unlink(target)  # the source was replaced since it was written: not ours
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(target)
        return False
