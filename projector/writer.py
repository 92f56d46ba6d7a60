"""The atomic generation writer: the only module that writes the target directory.

The layout is Kubernetes' AtomicWriter layout::

    target/..2026_11_24_16_15_51.123456789/   one generation: the complete tree
    target/..data -> ..2026_11_24_16_15_51.123456789
    target/name -> ..data/name                one link per top-level name
    target/..2026_11_24_16_15_51.200417553/   the next generation, prepared ahead (see below)
    target/..data_tmp.<hex> -> ..2026_11_24_16_15_51.200417553
    target/..blanks/                          empty files for the next change's files

Writing a change (``Writer.apply``) goes like this:

 1. If the live generation already holds every wanted file with the same digest (mode and owner
    included) and every top-level link is in place, stop: nothing changes on disk and nobody is told.
 2. Get a candidate generation, named ``..<UTC time with ns>``: the one prepared ahead if its
    directories are as this writer left them; else a stale generation due for removal (see 8), if
    intact, renamed to the new name (it already holds most files, so the change costs what differs,
    not the whole tree); else a new, empty directory created exclusively with the directory mode and
    owner.
 3. Fill the candidate: remove what must not be in it, then add what is missing. A file whose
    content is live is hard-linked from the live generation; any other is written into a blank file
    made ahead and renamed into place, or created exclusively; either way its mode and owner are set
    before the first byte is written. No file is ever written in place: hard
    links share the inode with other generations. With ``fsync`` files and directories are flushed.
 4. Any failure so far removes the candidate and leaves the live generation untouched.
 5. Create the links ``name -> ..data/name`` that are new, so that each name resolves the moment
    ``..data`` flips (until then they dangle, which a reader sees as "not there yet").
 6. Swap: rename(2) a uniquely named temporary link to the candidate (made ahead) over ``..data``.
    This is the only step readers can observe, and it is atomic. With ``fsync`` the target is flushed.
 7. Remove the links of names that are gone; only links that point into ``..data/`` are ever removed.
 8. Mark the old generation stale. The newest ``MAX_STALE`` stale generations stay for a grace
    period, so that a reader that resolved ``..data`` just before a swap can finish; older ones, and
    those past the grace, are due for removal. ``collect_garbage``, which the caller runs when no
    change is waiting, removes them (a 10,000-file tree takes as long to remove as to link, so this
    stays off the path from commit to signal); a change that comes first reuses one (step 2).

``prepare``, which the caller runs after a swap (once the child has been told) and when idle, makes
ahead what the next change needs but does not depend on: the next name and its temporary link, the
next generation as a copy of the live one (a due stale generation brought up to date, or a new one
with every file linked: hard links only, no old content), and blank files with the files' mode and
owner. A change then writes only its own files: allocating inodes, renaming a directory and linking
thousands of files are all off the path from commit to signal.

What to remove is always computed from generation names this module created or recognised by their
pattern, never by walking paths a user could have planted links in. ``open`` cleans what a crash left
(temporary links, blanks, generations that ``..data`` does not point to) and indexes the live generation by
content, so that a torn file from a power loss differs from etcd and is rewritten.
"""

from __future__ import annotations

import contextlib
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
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from .settings import Ownership

DATA_LINK = "..data"
TEMP_LINK_PREFIX = "..data_tmp."
GENERATION_PATTERN = re.compile(r"\.\.\d{4}(?:_\d{2}){5}\.\d{9}")
GRACE_SECONDS = 5.0
MAX_STALE = 3  # stale generations kept within the grace, at most
BLANKS_DIRECTORY = "..blanks"
BLANKS = 8  # files made ahead for the changed files of the next change
NOT_REUSABLE = b""  # the digest of an indexed file whose mode or owner is not the wanted one

log = logging.getLogger(__name__)


def digest(value: bytes) -> bytes:
    """What the writer and the dispenser remember of a value: never the value itself."""
    return hashlib.sha256(value).digest()


class WriteError(Exception):
    """Writing a generation failed; the live generation is untouched. The message names the path."""


class Rejected(Exception):
    """The candidate generation was refused by the check; the live one is untouched."""


@dataclass(slots=True)
class Generation:
    """What the writer knows of one generation directory.

    ``files`` maps each path to its content's digest. ``directories`` maps each directory ("" is the
    generation itself) to its modification time as this writer left it, which is how an entry added
    or removed by anyone else is noticed before the generation is reused; None for a generation
    found on disk at start, which is never reused.
    """

    name: str
    files: dict[str, bytes]
    directories: dict[str, int] | None
    stale_since: float = 0.0


@dataclass(slots=True)
class Next:
    """What is made ahead for the next change: its generation's name, a temporary link to that name
    (renamed over ``..data`` by the swap), and, when an old generation could be reused, the generation
    itself, already equal to the live one (hard links only: it holds no old content)."""

    name: str
    link: str
    generation: Generation | None = None


class Blanks:
    """Empty files made ahead in ``target/..blanks``, with the files' mode and owner. A changed file is
    written into one and renamed into place: the change does not pay for allocating an inode, the
    slowest step of writing a small file (about 0.1 ms on this machine's ext4)."""

    def __init__(self, target: Path, ownership: Ownership) -> None:
        self.path = target / BLANKS_DIRECTORY
        self.ownership = ownership
        self.fd: int | None = None  # the directory, opened once: renaming it away changes nothing
        self._names: list[str] = []
        self._counter = itertools.count()

    def fill(self) -> None:
        """Make blanks until there are ``BLANKS``."""
        if self.fd is None:
            os.mkdir(self.path, 0o700)
            self.fd = _open_directory(str(self.path))
        while len(self._names) < BLANKS:
            name = str(next(self._counter))
            os.close(_create_file(self.fd, name, self.ownership))
            self._names.append(name)

    def write(self, data: bytes, fsync: bool) -> str | None:
        """The name (in ``fd``) of a blank that now holds ``data``; None if none is left, or if the
        one taken is not the empty file this class made (then it is left alone)."""
        if self.fd is None or not self._names:
            return None
        name = self._names.pop()
        fd = os.open(name, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.fd)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or st.st_size != 0:
                return None
            _write_all(fd, data, fsync)
        finally:
            os.close(fd)
        return name

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd, self._names = None, []
            _remove_tree(str(self.path))


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
        self._prefix = f"{target}/"  # for paths on the way of a change: cheaper than pathlib
        self.ownership = ownership
        self.fsync = fsync
        self.grace = grace
        self.clock = clock
        self._live: Generation | None = None
        self._names: set[str] = set()  # the live generation's top-level names
        self._links: set[str] = set()  # our links in the target
        self._stale: list[Generation] = []  # oldest first
        self._next: Next | None = None  # what is ready for the next change
        self._abandoned: set[str] = set()  # generations that could not be removed yet
        self._blanks = Blanks(target, ownership)
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
            name = self._live_generation()
            self._remove_leftovers(name)
            if name is not None:
                self._live = Generation(name, self._index(self.target / name), None)
                self._names = _top_level_names(self._live.files)
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

    def _remove_leftovers(self, live: str | None) -> None:
        for entry in os.scandir(self.target):
            if entry.name.startswith(TEMP_LINK_PREFIX) and entry.is_symlink():
                os.unlink(entry.path)
            elif entry.name == BLANKS_DIRECTORY:
                _remove_tree(entry.path)
            elif self._is_generation(entry) and entry.name != live:
                # Names sort by time: one newer than the live generation never went live.
                unfinished = live is None or entry.name > live
                kind = "unfinished" if unfinished else "old"
                log.info("removing %s generation %s left by an earlier run", kind, entry.name)
                _remove_tree(entry.path)

    @staticmethod
    def _is_generation(entry: os.DirEntry[str]) -> bool:
        return bool(GENERATION_PATTERN.fullmatch(entry.name)) and entry.is_dir(follow_symlinks=False)

    def _index(self, generation: Path) -> dict[str, bytes]:
        """The digest of every file in a generation; anything odd inside, or a file with another mode
        or owner, gets a digest that differs from every value, so that it is rewritten."""
        files: dict[str, bytes] = {}
        for root, dirs, names in os.walk(generation):
            for name in names + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
                path = os.path.join(root, name)
                files[os.path.relpath(path, generation)] = self._indexed_digest(path)
        return files

    def _indexed_digest(self, path: str) -> bytes:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return NOT_REUSABLE
        try:
            st = os.fstat(fd)
            own = self.ownership
            if not (
                stat.S_ISREG(st.st_mode)
                and stat.S_IMODE(st.st_mode) == own.mode
                and own.uid in (None, st.st_uid)
                and own.gid in (None, st.st_gid)
            ):
                return NOT_REUSABLE
            hasher = hashlib.sha256()
            while chunk := os.read(fd, 1 << 20):
                hasher.update(chunk)
            return hasher.digest()
        finally:
            os.close(fd)

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
    def generation(self) -> str | None:
        """The live generation's directory name."""
        return None if self._live is None else self._live.name

    @property
    def files(self) -> Mapping[str, bytes]:
        """The live generation's files: relative path -> digest."""
        return {} if self._live is None else self._live.files

    def is_foreign(self, name: str) -> bool:
        """Whether a top-level name is taken by something this tool did not create."""
        if name in self._links:
            return False
        return os.path.lexists(self.target / name) and not self._is_our_link(name)

    def read(self, path: str) -> bytes:
        """A file's content in the live generation."""
        assert self._live is not None
        with open(self.target / self._live.name / path, "rb") as handle:
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
        live = self._live
        same_paths = live is not None and wanted.keys() == live.files.keys()
        names = self._names if same_paths else _top_level_names(wanted)
        if live is not None and wanted == live.files and self._links == names:
            return False
        candidate, root = self._candidate()
        try:
            self._fill(candidate, root, wanted, content)
            if accept is not None and not accept(self.target / candidate.name):
                self._remove(candidate.name)
                raise Rejected(candidate.name)
            self._link(names - self._links)
        except OSError as exc:
            self._remove(candidate.name)
            raise WriteError(_describe(exc, self.target / candidate.name)) from None
        finally:
            os.close(root)
        self._swap(candidate.name)
        self._unlink(self._links - names)
        self._retire(candidate)
        self._names = self._links = names  # both only ever replaced, never changed in place
        return True

    def _candidate(self, newer: int = 1) -> tuple[Generation, int]:
        """A generation to fill, and its directory opened: the one prepared, else a stale one due for
        removal if it is intact (renamed), else a new one. ``newer``: see ``_spare``."""
        ready = self._next
        if ready is not None and ready.generation is not None:
            twin, ready.generation = ready.generation, None
            root = self._open_intact(twin)
            if root is not None:
                return twin, root
            self._discard(twin)
        spare = self._spare(newer)
        if spare is None:
            return self._new_generation()
        self._stale.remove(spare)
        root = self._open_intact(spare)
        if root is None:
            self._discard(spare)
            return self._new_generation()
        old = spare.name
        try:
            spare.name = self._rename(old)
        except WriteError:
            os.close(root)
            raise
        log.debug("reusing generation %s as %s", old, spare.name)
        return spare, root

    def _spare(self, newer: int) -> Generation | None:
        """The newest stale generation due for removal, counting ``newer`` generations that will be
        stale before it: 1 while the live generation is about to be replaced, else 0."""
        now = self.clock()
        for rank, generation in enumerate(reversed(self._stale), start=newer):
            if rank >= MAX_STALE or now - generation.stale_since >= self.grace:
                return generation
        return None

    def _discard(self, generation: Generation) -> None:
        log.info("generation %s was changed by someone else; removing it, not reusing it", generation.name)
        self._remove(generation.name)

    def _open_intact(self, generation: Generation) -> int | None:
        """The generation's directory opened, if its directories are as this writer left them."""
        if generation.directories is None:
            return None
        try:
            root = _open_directory(self._prefix + generation.name)
        except OSError:
            return None
        if _unchanged(root, generation.directories):
            return root
        os.close(root)
        return None

    def _new_generation(self) -> tuple[Generation, int]:
        for name in self._new_names():
            try:
                os.mkdir(self._prefix + name, self.ownership.directory_mode)
            except FileExistsError:
                continue
            except OSError as exc:
                raise WriteError(_describe(exc, self.target / name)) from None
            try:
                return Generation(name, {}, {}), _open_directory(self._prefix + name)
            except OSError as exc:
                self._remove(name)
                raise WriteError(_describe(exc, self.target / name)) from None
        raise AssertionError("unreachable")

    def _rename(self, old: str) -> str:
        """Rename a reused generation to a fresh name: a reader still holding its old name fails to
        open files rather than reading a mix of two generations."""
        for name in self._new_names():
            if os.path.lexists(self.target / name):
                continue
            try:
                os.rename(self.target / old, self.target / name)
            except OSError as exc:
                self._remove(old)
                raise WriteError(_describe(exc, self.target / old)) from None
            return name
        raise AssertionError("unreachable")

    def _new_names(self) -> Iterator[str]:
        """Names for a new generation: the prepared one, then names from the current time on, one
        nanosecond apart. All are newer than the live generation's: names sort by age."""
        if self._next is not None:
            yield self._next.name
        for stamp in itertools.count(time.time_ns()):
            seconds, nanos = divmod(stamp, 1_000_000_000)
            yield datetime.fromtimestamp(seconds, UTC).strftime("..%Y_%m_%d_%H_%M_%S.") + f"{nanos:09d}"

    def _fill(
        self, candidate: Generation, root: int, wanted: Mapping[str, bytes], content: Callable[[str], bytes]
    ) -> None:
        """Make the candidate (its directory open as ``root``) hold exactly ``wanted``: first remove
        the files that are not wanted or differ, and directories left empty by that; then create what
        is missing, one directory at a time through directory descriptors (short names instead of long
        paths: an unchanged file costs one link(2) and little else). Not rename(2) over a differing
        file: ext4 then flushes the new file's data (its replace-by-rename heuristic), 4x slower."""
        files, directories = candidate.files, candidate.directories
        assert directories is not None
        live = {} if self._live is None else self._live.files
        gone = files.keys() - wanted.keys()
        missing = [path for path, wanted_digest in wanted.items() if files.get(path) != wanted_digest]
        linked = {path for path in missing if live.get(path) == wanted[path]}
        touched: set[str] = set()  # directories whose entries changed
        live_root = _open_directory(self._prefix + self._live.name) if linked and self._live else None
        try:
            if not directories:  # a new generation
                if self._fix_directories:
                    self._own_directory(root)
                directories[""] = 0
                touched.add("")
            for directory, names in _by_directory(gone.union(path for path in missing if path in files)):
                fd = _open_directory(directory, root) if directory else root
                try:
                    for name in names:
                        os.unlink(name, dir_fd=fd)
                        del files[f"{directory}/{name}" if directory else name]
                finally:
                    _close_below(fd, root)
                touched.add(directory)
            self._remove_emptied(root, directories, {path.rpartition("/")[0] for path in gone}, touched)
            for directory, names in _by_directory(missing):
                self._make_directories(root, directory, directories, touched)
                new_fd = _open_directory(directory, root) if directory else root
                old_fd = None
                try:
                    for name in names:
                        path = f"{directory}/{name}" if directory else name
                        if path in linked:
                            if old_fd is None:
                                assert live_root is not None
                                old_fd = _open_directory(directory, live_root) if directory else live_root
                            os.link(name, name, src_dir_fd=old_fd, dst_dir_fd=new_fd, follow_symlinks=False)
                        else:
                            self._write_file(new_fd, name, content(path))
                        files[path] = wanted[path]
                finally:
                    _close_below(new_fd, root)
                    if old_fd is not None:
                        _close_below(old_fd, live_root)
                touched.add(directory)
            for directory in sorted(touched, key=len, reverse=True):
                if directory in directories:
                    self._note_directory(root, directory, directories)
        finally:
            if live_root is not None:
                os.close(live_root)

    def _remove_emptied(
        self, root: int, directories: dict[str, int], parents: set[str], touched: set[str]
    ) -> None:
        """Remove the directories that removing files left empty, deepest first, and their parents
        that this leaves empty in turn (rmdir(2) refuses one that still holds anything)."""
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
        if self._fix_directories:
            fd = _open_directory(directory, root)
            try:
                self._own_directory(fd)
            finally:
                os.close(fd)
        directories[directory] = 0
        touched.update((directory, parent))

    def _note_directory(self, root: int, directory: str, directories: dict[str, int]) -> None:
        """Remember how we leave a directory; with ``fsync``, flush it (children before parents)."""
        if self.fsync:
            _fsync_directory(directory or ".", root)
        directories[directory] = os.stat(directory or ".", dir_fd=root, follow_symlinks=False).st_mtime_ns

    def _write_file(self, directory: int, name: str, data: bytes) -> None:
        blank = self._blanks.write(data, self.fsync)
        if blank is not None:
            os.rename(blank, name, src_dir_fd=self._blanks.fd, dst_dir_fd=directory)
            return
        fd = _create_file(directory, name, self.ownership)
        try:
            _write_all(fd, data, self.fsync)
        finally:
            os.close(fd)

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

    def prepare(self) -> None:
        """Make ahead what the next change needs but does not depend on (see the module's text). Each
        part that cannot be made now is made by the change itself."""
        if self._next is None:
            name, link = next(self._new_names()), TEMP_LINK_PREFIX + secrets.token_hex(8)
            try:
                os.symlink(name, self.target / link)
            except OSError as exc:
                log.debug("cannot prepare the next swap (it is made when needed): %s", exc.strerror)
                return
            self._next = Next(name, link)
        # Not from a generation found at start: it may hold odd files, which its first change replaces.
        if self._next.generation is None and self._live is not None and self._live.directories is not None:
            self._next.generation = self._twin()
        try:
            self._blanks.fill()
        except OSError as exc:
            log.debug("cannot make blank files ahead (files are created when needed): %s", exc.strerror)

    def _twin(self) -> Generation | None:
        """The next generation, made equal to the live one: a stale one due for removal if there is
        one (it differs by the last few changes), else a new one (every file linked)."""
        assert self._live is not None
        try:
            twin, root = self._candidate(newer=0)
        except WriteError as exc:
            log.debug("cannot prepare the next generation: %s", exc)
            return None
        try:
            self._fill(twin, root, self._live.files, self.read)  # every file is linked: none is read
        except OSError as exc:
            log.debug("cannot prepare the next generation: %s", _describe(exc, self.target / twin.name))
            self._remove(twin.name)
            return None
        finally:
            os.close(root)
        return twin

    def close(self) -> None:
        """Remove what was made ahead: nothing of ours is left half-made."""
        self._blanks.close()
        ready, self._next = self._next, None
        if ready is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.target / ready.link)
            if ready.generation is not None:
                self._remove(ready.name)

    def _swap(self, generation: str) -> None:
        ready, self._next = self._next, None
        if ready is not None and ready.name != generation:  # its name was taken: not ours to use
            with contextlib.suppress(OSError):
                os.unlink(self.target / ready.link)
            ready = None
        temporary = self._prefix + (ready.link if ready else TEMP_LINK_PREFIX + secrets.token_hex(8))
        try:
            if ready is None:
                os.symlink(generation, temporary)
            os.rename(temporary, self._prefix + DATA_LINK)
            if self.fsync:
                _fsync_directory(str(self.target))
        except OSError as exc:
            self._remove(generation)
            with contextlib.suppress(OSError):  # left for open() to clean if the target is read-only
                os.unlink(temporary)
            raise WriteError(_describe(exc, self.target / DATA_LINK)) from None

    def _unlink(self, names: set[str]) -> None:
        for name in names:
            if self._is_our_link(name):
                try:
                    os.unlink(self.target / name)
                except OSError as exc:
                    log.warning("cannot remove link %s: %s", name, exc.strerror)

    def _retire(self, generation: Generation) -> None:
        if self._live is not None:
            self._live.stale_since = self.clock()
            self._stale.append(self._live)
        self._live = generation

    def collect_garbage(self, everything: bool = False) -> None:
        """Remove the stale generations due for removal (past the grace, or older than the newest
        ``MAX_STALE``); with ``everything``, all of them (nobody will read them: we are about to exit
        without a child)."""
        now = self.clock()
        kept = []
        for rank, generation in enumerate(reversed(self._stale)):
            if everything or rank >= MAX_STALE or now - generation.stale_since >= self.grace:
                self._remove(generation.name)
            else:
                kept.append(generation)
        self._stale = kept[::-1]
        for name in sorted(self._abandoned):
            self._remove(name)

    def _remove(self, name: str) -> None:
        """Remove a generation of ours; one that cannot be removed now (a read-only target) is tried
        again when garbage is collected, with one warning in all."""
        again = name in self._abandoned
        if _remove_tree(str(self.target / name), quiet=again):
            self._abandoned.discard(name)
        else:
            self._abandoned.add(name)

    @property
    def has_garbage(self) -> bool:
        return bool(self._stale or self._abandoned)


def _create_file(directory: int, name: str, own: Ownership) -> int:
    """A new, empty file, opened for writing, with its mode and owner already set: no reader ever
    sees looser permissions than asked for."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(name, flags, own.mode, dir_fd=directory)
    try:
        os.fchmod(fd, own.mode)  # the mode given to open(2) is filtered by the umask
        if own.uid is not None or own.gid is not None:
            os.fchown(fd, _id(own.uid), _id(own.gid))
    except OSError:
        os.close(fd)
        raise
    return fd


def _write_all(fd: int, data: bytes, fsync: bool) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    if fsync:
        os.fsync(fd)


def _unchanged(root: int, directories: dict[str, int]) -> bool:
    """Whether each directory below ``root`` is one, with the modification time given."""
    try:
        for directory, mtime in directories.items():
            st = os.stat(directory or ".", dir_fd=root, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode) or st.st_mtime_ns != mtime:
                return False
    except OSError:
        return False
    return True


def _top_level_names(paths: Iterable[str]) -> set[str]:
    return {path.split("/", 1)[0] for path in paths}


def _by_directory(paths: Iterable[str]) -> Iterator[tuple[str, list[str]]]:
    """(directory, names in it) for the paths, sorted so that parents come before children."""
    entries = sorted(path.rpartition("/")[::2] for path in paths)
    for directory, group in itertools.groupby(entries, key=operator.itemgetter(0)):
        yield directory, [name for _, name in group]


def _open_directory(path: str, parent: int | None = None) -> int:
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)


def _fsync_directory(path: str, parent: int | None = None) -> None:
    fd = _open_directory(path, parent)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _close_below(fd: int, root: int | None) -> None:
    """Close a directory opened below ``root``; ``root`` itself stands for "" and stays open."""
    if fd != root:
        os.close(fd)


def _remove_tree(path: str, quiet: bool = False) -> bool:
    """Remove a directory tree; whether it is gone."""
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.log(
            logging.DEBUG if quiet else logging.WARNING,
            "cannot remove %s: %s",
            os.path.basename(path),
            exc.strerror,
        )
        return False
    return True


def _id(value: int | None) -> int:
    return -1 if value is None else value


def _describe(exc: OSError, where: Path) -> str:
    name = exc.filename if isinstance(exc.filename, str) else str(where)
    return f"{exc.strerror or exc}: {name}"
