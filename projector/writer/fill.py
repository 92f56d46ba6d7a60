"""Making one generation directory hold exactly a set of files.

A candidate generation (new, prepared ahead, or a reused old one) is told which paths must become what:
a file with a given digest, or no file. Only those paths are touched: first what is there for them is
removed (and directories left empty), then the files are added, one directory at a time through
directory descriptors (short names instead of long paths: a linked file costs one link(2) and little
else). A file whose content is live is hard-linked from the live generation; any other is written into
a blank file made ahead and renamed into place, or created exclusively; either way its mode and owner
are set before the first byte is written. No file is ever written in place: hard links share the inode
with other generations. Nor is new content renamed over a differing file: ext4 then flushes the new
file's data (its replace-by-rename heuristic), 4x slower.

Each directory's modification time is remembered as it is left, which is how a change by anyone else
is noticed before the generation is used again (``intact``).

With per-file modes (``--file-mode``) or owners (``--file-owner``) a directory gets what its files
need to be reachable: ``rwx`` for the owner, plus read and search for the group (others) when a file
below it is readable by the group (others), plus search alone for others when a file below it belongs
to another user or group (so that its owner reaches it; the file's own mode keeps everyone else out);
never write for them. New directories start as the owner's alone and are widened once their files are
in; each generation counts, per directory, the files below it that need each, so that a change adjusts
only the directories above what it changed.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping

from ..paths import directories_above
from ..settings import Ownership
from .blanks import Blanks
from .layout import (
    UMASK,
    Generation,
    close_below,
    create_file,
    fsync_directory,
    open_directory,
    own_directory,
    write_all,
)


class Filler:
    """Fills generations of one target with files of one mode and owner."""

    def __init__(self, prefix: str, ownership: Ownership, fsync: bool, blanks: Blanks) -> None:
        self.prefix = prefix  # the target's path and a slash: cheaper than pathlib on a change's way
        self.ownership = ownership
        self.fsync = fsync
        self.blanks = blanks
        self.owner = (ownership.uid, ownership.gid)  # the directories' owner, and every file's by default
        # Whether a new directory needs chmod/chown after mkdir: not when the umask leaves its mode
        # alone and no owner is set, which saves three system calls per directory and generation.
        own = ownership
        self.fix_directories = bool(own.directory_mode & UMASK) or own.uid is not None or own.gid is not None
        self.per_file = own.per_file

    def fill(
        self,
        candidate: Generation,
        root: int,
        needed: Mapping[str, bytes | None],
        content: Callable[[str], bytes],
        live: Generation | None,
        live_files: Mapping[str, bytes],
    ) -> None:
        """Make each path of ``needed`` in the candidate (its directory open as ``root``) what it says:
        a file with that digest, or none (None). A file whose digest is live is linked from the live
        generation; any other is written. Paths not named are left as they are."""
        directories = candidate.directories
        assert directories is not None
        touched: set[str] = set()  # directories whose entries changed
        live_root = None
        try:
            if not directories:  # a new generation: nothing to remove
                if self.fix_directories:
                    own_directory(root, self.ownership)
                directories[""] = 0
                touched.add("")
            else:
                self._remove(root, candidate, needed, touched)
            for directory, names in by_directory(path for path, new in needed.items() if new is not None):
                self._make_directories(root, directory, directories, touched)
                new_fd = open_directory(directory, root) if directory else root
                old_fd = None
                try:
                    for name in names:
                        path = f"{directory}/{name}" if directory else name
                        if live is not None and live_files.get(path) == needed[path]:
                            if old_fd is None:
                                live_root = live_root or open_directory(self.prefix + live.name)
                                old_fd = open_directory(directory, live_root) if directory else live_root
                            os.link(name, name, src_dir_fd=old_fd, dst_dir_fd=new_fd, follow_symlinks=False)
                        else:
                            self._write_file(new_fd, name, content(path), path)
                        self._count(candidate, path, 1)
                finally:
                    close_below(new_fd, root)
                    if old_fd is not None:
                        close_below(old_fd, live_root)
                touched.add(directory)
            if self.per_file:
                self._widen(root, candidate, touched)
            for directory in sorted(touched, key=len, reverse=True):
                if directory in directories:
                    self._note_directory(root, directory, directories)
        finally:
            if live_root is not None:
                os.close(live_root)

    def _remove(self, root: int, candidate: Generation, paths: Iterable[str], touched: set[str]) -> None:
        """Remove the files at ``paths`` where there are any (a file is never written in place: one to
        be written anew goes first), then the directories that this leaves empty."""
        directories = candidate.directories
        assert directories is not None
        parents: set[str] = set()
        for directory, names in by_directory(paths):
            if directory not in directories:
                continue  # nothing there
            fd = open_directory(directory, root) if directory else root
            try:
                for name in names:
                    try:
                        os.unlink(name, dir_fd=fd)
                    except (FileNotFoundError, IsADirectoryError):
                        continue  # a directory goes once the files below it are gone
                    self._count(candidate, f"{directory}/{name}" if directory else name, -1)
                    parents.add(directory)
            finally:
                close_below(fd, root)
            touched.add(directory)
        self._remove_emptied(root, candidate, parents, touched)

    def _remove_emptied(self, root: int, candidate: Generation, parents: set[str], touched: set[str]) -> None:
        """Remove the directories that removing files left empty, deepest first, and their parents
        that this leaves empty in turn (rmdir(2) refuses one that still holds anything)."""
        directories = candidate.directories
        assert directories is not None
        pending = parents - {""}
        while pending:
            directory = max(pending, key=lambda path: path.count("/"))
            pending.discard(directory)
            try:
                os.rmdir(directory, dir_fd=root)
            except OSError as exc:
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    continue
                raise
            del directories[directory]
            candidate.modes.pop(directory, None)
            parent = directory.rpartition("/")[0]
            touched.add(parent)
            if parent:
                pending.add(parent)

    def _make_directories(
        self, root: int, directory: str, directories: dict[str, int], touched: set[str]
    ) -> None:
        """Create ``directory`` and its missing parents below ``root``, with mode and owner."""
        if directory in directories:
            return
        parent = directory.rpartition("/")[0]
        self._make_directories(root, parent, directories, touched)
        os.mkdir(directory, self.ownership.directory_mode, dir_fd=root)
        if self.fix_directories:
            fd = open_directory(directory, root)
            try:
                own_directory(fd, self.ownership)
            finally:
                os.close(fd)
        directories[directory] = 0
        touched.update((directory, parent))

    def _note_directory(self, root: int, directory: str, directories: dict[str, int]) -> None:
        """Remember how we leave a directory; with ``fsync``, flush it (children before parents)."""
        if self.fsync:
            fsync_directory(directory or ".", root)
        directories[directory] = os.stat(directory or ".", dir_fd=root, follow_symlinks=False).st_mtime_ns

    def _count(self, generation: Generation, path: str, step: int) -> None:
        """Count a file in (``step`` 1) or out (-1) of what each directory above it must let through:
        reading by the group, by others, and search by another owner."""
        if not self.per_file:
            return
        mode = self.ownership.mode_of(path)
        group, others = step if mode & 0o040 else 0, step if mode & 0o004 else 0
        stranger = step if self.ownership.owner_of(path) != self.owner else 0
        if not (group or others or stranger):
            return
        for directory in ("", *directories_above(path)):
            counts = generation.readers.setdefault(directory, [0, 0, 0])
            counts[0] += group
            counts[1] += others
            counts[2] += stranger

    def _widen(self, root: int, generation: Generation, touched: set[str]) -> None:
        """Give each directory above a changed file the mode its files need (see the module's text)."""
        above = {""}
        for directory in touched - above:
            above.update(directories_above(directory))
            above.add(directory)
        assert generation.directories is not None
        for directory in above & generation.directories.keys():
            group, others, strangers = generation.readers.get(directory, (0, 0, 0))
            mode = 0o700 | (0o050 if group else 0) | (0o005 if others else 0o001 if strangers else 0)
            if generation.modes.get(directory) != mode:
                fd = open_directory(directory, root) if directory else root
                try:
                    os.fchmod(fd, mode)
                finally:
                    close_below(fd, root)
                generation.modes[directory] = mode

    def _write_file(self, directory: int, name: str, data: bytes, path: str) -> None:
        mode, owner = self.ownership.mode_of(path), self.ownership.owner_of(path)
        blank = self.blanks.write(data, mode, owner, self.fsync)
        if blank is not None:
            os.rename(blank, name, src_dir_fd=self.blanks.fd, dst_dir_fd=directory)
            return
        fd = create_file(directory, name, owner, mode)
        try:
            write_all(fd, data, self.fsync)
        finally:
            os.close(fd)


def intact(root: int, directories: dict[str, int]) -> bool:
    """Whether each directory below ``root`` is one, with the modification time we left it with."""
    try:
        for directory, mtime in directories.items():
            st = os.stat(directory or ".", dir_fd=root, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode) or st.st_mtime_ns != mtime:
                return False
    except OSError:
        return False
    return True


def by_directory(paths: Iterable[str]) -> Iterator[tuple[str, list[str]]]:
    """(directory, names in it) for the paths, parents before children (grouped, not sorted: a pass)."""
    names: dict[str, list[str]] = {}
    for path in paths:
        directory, _, name = path.rpartition("/")
        group = names.get(directory)
        if group is None:
            names[directory] = [name]
        else:
            group.append(name)
    for directory in sorted(names):
        yield directory, names[directory]
