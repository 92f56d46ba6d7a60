"""The atomic generation writer: the only module that writes the target directory.

The layout is Kubernetes' AtomicWriter layout::

    target/..2026_11_24_16_15_51.123456789/   one generation: the complete tree
    target/..data -> ..2026_11_24_16_15_51.123456789
    target/name -> ..data/name                one link per top-level name

Writing a change (``Writer.apply``) goes like this:

 1. If every wanted file is already in the live generation with the same digest, mode and owner, and
    every top-level link is in place, stop: nothing changes on disk and nobody is told.
 2. Create a new generation directory ``..<UTC time with ns>`` exclusively, with the directory mode and
    owner.
 3. Fill it: a file whose content and ownership are unchanged is hard-linked from the live generation;
    any other file is created exclusively with its mode and owner set before the first byte is written.
    With ``fsync`` the files and directories are flushed.
 4. Any failure so far removes the new generation and leaves the live one untouched.
 5. Create the links ``name -> ..data/name`` that are new, so that each name resolves the moment
    ``..data`` flips (until then they dangle, which a reader sees as "not there yet").
 6. Swap: point a uniquely named temporary link at the new generation and rename(2) it over ``..data``.
    This is the only step readers can observe, and it is atomic. With ``fsync`` the target is flushed.
 7. Remove the links of names that are gone; only links that point into ``..data/`` are ever removed.
 8. Mark the old generation stale. Stale generations stay for a grace period, so that a reader that
    resolved ``..data`` just before the swap can finish; ``collect_garbage``, which the caller runs
    when no change is waiting (removal is off the path from commit to signal), removes them after
    it. Only if more than ``MAX_PILED`` pile up is the oldest removed at once.

What to remove is always computed from generation names this module created or recognised by their
pattern, never by walking paths a user could have planted links in. ``open`` cleans what a crash left
(temporary links, generations that ``..data`` does not point to) and indexes the live generation by
content, so that a torn file from a power loss differs from etcd and is rewritten.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import logging
import operator
import os
import re
import secrets
import shutil
import stat
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from .settings import Ownership

DATA_LINK = "..data"
TEMP_LINK_PREFIX = "..data_tmp."
GENERATION_PATTERN = re.compile(r"\.\.\d{4}(?:_\d{2}){5}\.\d{9}")
GRACE_SECONDS = 5.0
MAX_STALE = 3  # stale generations kept within the grace, at most
MAX_PILED = 16  # stale generations at most, even while there is no time to collect them

log = logging.getLogger(__name__)


def digest(value: bytes) -> bytes:
    """What the writer and the dispenser remember of a value: never the value itself."""
    return hashlib.sha256(value).digest()


class WriteError(Exception):
    """Writing a generation failed; the live generation is untouched. The message names the path."""


class Rejected(Exception):
    """The candidate generation was refused by the check; the live one is untouched."""


@dataclass(frozen=True, slots=True)
class FileState:
    digest: bytes
    mode: int
    uid: int
    gid: int


class Writer:
    """Owns one target directory: indexes it, writes generations, swaps them in, collects garbage."""

    def __init__(
        self,
        target: Path,
        ownership: Ownership,
        *,
        fsync: bool = False,
        grace: float = GRACE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.target = target
        self.ownership = ownership
        self.fsync = fsync
        self.grace = grace
        self.clock = clock
        self.generation: str | None = None
        self._files: dict[str, FileState] = {}
        self._links: set[str] = set()
        self._stale: dict[str, float] = {}
        # Whether a new directory needs chmod/chown after mkdir: not when the umask leaves its mode
        # alone and no owner is set, which saves three system calls per directory and generation.
        # Read once, here, before any other thread runs: reading the umask means setting it.
        umask = os.umask(0o077)
        os.umask(umask)
        own = ownership
        self._fix_directories = bool(own.directory_mode & umask) or own.uid is not None or own.gid is not None

    # -- start -------------------------------------------------------------------------------------------

    def open(self) -> None:
        """Create the target if missing, clean crash leftovers, and index the live generation."""
        try:
            self._create_target()
            self.generation = self._live_generation()
            self._remove_leftovers()
            if self.generation is not None:
                self._files = self._index(self.target / self.generation)
            self._links = self._our_links()
        except OSError as exc:
            raise WriteError(_describe(exc, self.target)) from None

    def _create_target(self) -> None:
        if self.target.is_dir():
            return
        self.target.mkdir(parents=True, mode=self.ownership.directory_mode)
        fd = _open_directory(str(self.target))
        try:
            self._own_directory(fd)
        finally:
            os.close(fd)

    def _live_generation(self) -> str | None:
        try:
            name = os.readlink(self.target / DATA_LINK)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise OSError(errno.EEXIST, f"{DATA_LINK} exists and is not a link", DATA_LINK) from None
            raise
        # A link we did not write (elsewhere, or not a generation) is replaced by the first swap.
        if GENERATION_PATTERN.fullmatch(name) and (self.target / name).is_dir():
            return name
        log.warning("%s points to %r, which is not a generation; it will be replaced", DATA_LINK, name)
        return None

    def _remove_leftovers(self) -> None:
        for entry in os.scandir(self.target):
            if entry.name.startswith(TEMP_LINK_PREFIX) and entry.is_symlink():
                os.unlink(entry.path)
            elif self._is_generation(entry) and entry.name != self.generation:
                # Names sort by time: one newer than the live generation never went live.
                unfinished = self.generation is None or entry.name > self.generation
                kind = "unfinished" if unfinished else "old"
                log.info("removing %s generation %s left by an earlier run", kind, entry.name)
                _remove_tree(entry.path)

    @staticmethod
    def _is_generation(entry: os.DirEntry[str]) -> bool:
        return bool(GENERATION_PATTERN.fullmatch(entry.name)) and entry.is_dir(follow_symlinks=False)

    def _index(self, generation: Path) -> dict[str, FileState]:
        """Digest and ownership of every file in a generation; anything odd inside gets an empty digest
        so that it differs from every value and the generation is rewritten."""
        files: dict[str, FileState] = {}
        for root, dirs, names in os.walk(generation):
            for name in names + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
                path = os.path.join(root, name)
                files[os.path.relpath(path, generation)] = _file_state(path)
        return files

    def _our_links(self) -> set[str]:
        return {
            entry.name
            for entry in os.scandir(self.target)
            if not entry.name.startswith("..") and self._is_our_link(entry.name)
        }

    def _is_our_link(self, name: str) -> bool:
        try:
            return os.readlink(self.target / name) == f"{DATA_LINK}/{name}"
        except OSError:
            return False

    # -- questions -----------------------------------------------------------------------------------------

    @property
    def files(self) -> Mapping[str, FileState]:
        """The live generation's files by relative path."""
        return self._files

    def is_foreign(self, name: str) -> bool:
        """Whether a top-level name is taken by something this tool did not create."""
        if name in self._links:
            return False
        return os.path.lexists(self.target / name) and not self._is_our_link(name)

    def read(self, path: str) -> bytes:
        """A file's content in the live generation."""
        assert self.generation is not None
        with open(self.target / self.generation / path, "rb") as handle:
            return handle.read()

    # -- writing -----------------------------------------------------------------------------------------

    def apply(
        self,
        wanted: Mapping[str, bytes],
        content: Callable[[str], bytes],
        accept: Callable[[Path], bool] | None = None,
    ) -> bool:
        """Make the target hold exactly ``wanted`` (path -> digest); True if a new generation went live.

        ``content(path)`` gives the bytes of a path that is not already live with that digest.
        ``accept(candidate)``, if given, sees the complete candidate generation before the swap; when
        it says no, the candidate is removed and :class:`Rejected` is raised.
        """
        names = {path.split("/", 1)[0] for path in wanted}
        reusable = self._reusable(wanted)
        unchanged = len(reusable) == len(wanted) == len(self._files) and self._links == names
        if unchanged and self.generation is not None:
            return False
        generation = self._new_generation()
        try:
            files = self._fill(generation, wanted, reusable, content)
            if accept is not None and not accept(self.target / generation):
                _remove_tree(str(self.target / generation))
                raise Rejected(generation)
            self._link(names - self._links)
        except OSError as exc:
            _remove_tree(str(self.target / generation))
            raise WriteError(_describe(exc, self.target / generation)) from None
        self._swap(generation)
        self._unlink(self._links - names)
        self._retire(generation)
        self._files, self._links = files, names
        return True

    def _reusable(self, wanted: Mapping[str, bytes]) -> set[str]:
        """Paths whose live file already has the wanted digest, mode and owner."""
        own, files = self.ownership, self._files
        return {
            path
            for path, wanted_digest in wanted.items()
            if (state := files.get(path)) is not None
            and state.digest == wanted_digest
            and state.mode == own.mode
            and own.uid in (None, state.uid)
            and own.gid in (None, state.gid)
        }

    def _new_generation(self) -> str:
        stamp = time.time_ns()
        while True:
            seconds, nanos = divmod(stamp, 1_000_000_000)
            name = datetime.fromtimestamp(seconds, UTC).strftime("..%Y_%m_%d_%H_%M_%S.") + f"{nanos:09d}"
            try:
                os.mkdir(self.target / name, self.ownership.directory_mode)
            except FileExistsError:
                stamp += 1
                continue
            except OSError as exc:
                raise WriteError(_describe(exc, self.target / name)) from None
            return name

    def _fill(
        self,
        generation: str,
        wanted: Mapping[str, bytes],
        reusable: set[str],
        content: Callable[[str], bytes],
    ) -> dict[str, FileState]:
        """Fill the new generation, one directory at a time through directory descriptors (short
        names instead of long paths: an unchanged file costs one link(2) and little else)."""
        new_root = _open_directory(str(self.target / generation))
        old_root = _open_directory(str(self.target / self.generation)) if self.generation else None
        made = {""}
        files: dict[str, FileState] = {}
        try:
            self._own_directory(new_root)
            entries = sorted(path.rpartition("/")[::2] for path in wanted)
            for directory, group in itertools.groupby(entries, key=operator.itemgetter(0)):
                self._make_directories(new_root, directory, made)
                new_fd, old_fd = _open_directory(directory or ".", new_root), None
                try:
                    for _, name in group:
                        path = f"{directory}/{name}" if directory else name
                        if path in reusable and old_root is not None:
                            if old_fd is None:
                                old_fd = _open_directory(directory or ".", old_root)
                            os.link(name, name, src_dir_fd=old_fd, dst_dir_fd=new_fd, follow_symlinks=False)
                            files[path] = self._files[path]
                        else:
                            files[path] = self._write_file(new_fd, name, content(path))
                finally:
                    _close(new_fd, old_fd)
            if self.fsync:
                for directory in sorted(made, key=len, reverse=True):
                    _fsync_directory(directory or ".", new_root)
        finally:
            _close(new_root, old_root)
        return files

    def _make_directories(self, root: int, directory: str, made: set[str]) -> None:
        """Create ``directory`` and its missing parents below ``root``, with mode and owner."""
        if directory in made:
            return
        self._make_directories(root, directory.rpartition("/")[0], made)
        os.mkdir(directory, self.ownership.directory_mode, dir_fd=root)
        if self._fix_directories:
            fd = _open_directory(directory, root)
            try:
                self._own_directory(fd)
            finally:
                os.close(fd)
        made.add(directory)

    def _write_file(self, directory: int, name: str, data: bytes) -> FileState:
        own = self.ownership
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(name, flags, own.mode, dir_fd=directory)
        try:
            # Mode and owner are set before the first byte, so no reader ever sees looser permissions.
            os.fchmod(fd, own.mode)
            if own.uid is not None or own.gid is not None:
                os.fchown(fd, _id(own.uid), _id(own.gid))
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if self.fsync:
                os.fsync(fd)
            st = os.fstat(fd)
        finally:
            os.close(fd)
        return FileState(digest(data), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)

    def _own_directory(self, fd: int) -> None:
        # mkdir's mode is filtered by the umask; the directory mode is part of the contract.
        os.fchmod(fd, self.ownership.directory_mode)
        own = self.ownership
        if own.uid is not None or own.gid is not None:
            os.fchown(fd, _id(own.uid), _id(own.gid))

    def _link(self, names: set[str]) -> None:
        for name in sorted(names):
            if not self._is_our_link(name):  # one left dangling by a failed swap is reused
                os.symlink(f"{DATA_LINK}/{name}", self.target / name)

    def _swap(self, generation: str) -> None:
        temporary = self.target / (TEMP_LINK_PREFIX + secrets.token_hex(8))
        try:
            os.symlink(generation, temporary)
            os.rename(temporary, self.target / DATA_LINK)
            if self.fsync:
                _fsync_directory(str(self.target))
        except OSError as exc:
            _remove_tree(str(self.target / generation))
            if os.path.lexists(temporary):
                os.unlink(temporary)
            raise WriteError(_describe(exc, self.target / DATA_LINK)) from None

    def _unlink(self, names: set[str]) -> None:
        for name in names:
            if self._is_our_link(name):
                try:
                    os.unlink(self.target / name)
                except OSError as exc:
                    log.warning("cannot remove link %s: %s", name, exc.strerror)

    def _retire(self, generation: str) -> None:
        if self.generation is not None:
            self._stale[self.generation] = self.clock()
        self.generation = generation
        if len(self._stale) > MAX_PILED:
            oldest = min(self._stale, key=self._stale.__getitem__)
            _remove_tree(str(self.target / oldest))
            del self._stale[oldest]

    def collect_garbage(self, everything: bool = False) -> None:
        """Remove stale generations older than the grace period, and all but the newest few; with
        ``everything``, all of them (nobody will read them: we are about to exit without a child)."""
        newest_first = sorted(self._stale.items(), key=lambda item: item[1], reverse=True)
        now = self.clock()
        for rank, (name, since) in enumerate(newest_first):
            if everything or rank >= MAX_STALE or now - since >= self.grace:
                _remove_tree(str(self.target / name))
                del self._stale[name]

    @property
    def has_garbage(self) -> bool:
        return bool(self._stale)


def _file_state(path: str) -> FileState:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        st = os.lstat(path)
        return FileState(b"", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
    try:
        st = os.fstat(fd)
        hasher = hashlib.sha256()
        while chunk := os.read(fd, 1 << 20):
            hasher.update(chunk)
    finally:
        os.close(fd)
    found = hasher.digest() if stat.S_ISREG(st.st_mode) else b""
    return FileState(found, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)


def _open_directory(path: str, parent: int | None = None) -> int:
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)


def _fsync_directory(path: str, parent: int | None = None) -> None:
    fd = _open_directory(path, parent)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _close(*fds: int | None) -> None:
    for fd in fds:
        if fd is not None:
            os.close(fd)


def _remove_tree(path: str) -> None:
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("cannot remove %s: %s", os.path.basename(path), exc.strerror)


def _id(value: int | None) -> int:
    return -1 if value is None else value


def _describe(exc: OSError, where: Path) -> str:
    name = exc.filename if isinstance(exc.filename, str) else str(where)
    return f"{exc.strerror or exc}: {name}"
