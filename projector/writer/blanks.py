"""Blank files made ahead for the next change, off the path from commit to signal.

After each swap (once the child has been told) and when idle, the writer prepares what the next change
needs but does not depend on (``Writer.prepare`` in swap.py): the next generation itself, made equal to
the live one, and here, blank files with the files' mode and owner (:class:`Blanks`), which a changed
file is written into and renamed into place, so that the change does not pay for allocating an inode.
A change then writes only its own files. All of it is removed when the tool exits and, after a
crash, at start (recovery.py).
"""

from __future__ import annotations

import itertools
import os
import stat
from pathlib import Path

from ..settings import Ownership
from .layout import BLANKS_DIRECTORY, create_file, keep, open_directory, remove_tree, write_all

BLANKS = 8  # files made ahead for the changed files of the next change


class Blanks:
    """Empty files made ahead in ``target/..blanks``, with the files' mode and owner. A changed file is
    written into one and renamed into place: the change does not pay for allocating an inode, the
    slowest step of writing a small file (0.1 ms to 0.6 ms on this machine kind's disk)."""

    def __init__(self, target: Path, ownership: Ownership) -> None:
        self.path = target / BLANKS_DIRECTORY
        self.ownership = ownership
        self.owner = (
            ownership.uid,
            ownership.gid,
        )  # the default one: blanks are made before the path is known
        self.fd: int | None = None  # the directory, opened once: renaming it away changes nothing
        self._names: list[str] = []
        self._counter = itertools.count()

    def fill(self) -> None:
        """Make blanks until there are ``BLANKS``."""
        if self.fd is None:
            os.mkdir(self.path, 0o700)
            self.fd = open_directory(str(self.path))
        while len(self._names) < BLANKS:
            name = str(next(self._counter))
            os.close(create_file(self.fd, name, self.owner, self.ownership.mode))
            self._names.append(name)

    def write(self, data: bytes, mode: int, owner: tuple[int | None, int | None], fsync: bool) -> str | None:
        """The name (in ``fd``) of a blank that now holds ``data``, with ``mode`` and ``owner``; None if
        none is left, or if the one taken is not the empty file this class made (then it is left alone)."""
        if self.fd is None or not self._names:
            return None
        name = self._names.pop()
        fd = os.open(name, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.fd)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or st.st_size != 0:
                return None
            if owner != self.owner:  # a --file-owner file: its owner too is set before the first byte
                os.fchown(fd, keep(owner[0]), keep(owner[1]))
            if stat.S_IMODE(st.st_mode) != mode:
                os.fchmod(fd, mode)  # before the first byte, as for any file
            write_all(fd, data, fsync)
        finally:
            os.close(fd)
        return name

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd, self._names = None, []
            remove_tree(str(self.path))
