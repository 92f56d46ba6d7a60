"""The writer: the one public way the target changes, and the swap.

``Writer.apply`` makes the target hold exactly a set of files (layout.py draws the layout):

 1. If the live generation already holds every wanted file with the same digest (mode and owner
    included) and every top-level link is in place, stop: nothing changes on disk and nobody is told.
 2. Get a candidate generation (candidates.py): the one made ahead, else an old one due for removal,
    renamed (it already holds most files, so the change costs what differs), else a new one.
 3. Fill the candidate (fill.py): remove what must not be in it, then add what is missing: live files
    as hard links, changed ones written into blanks made ahead, mode and owner set before the first
    byte. With ``fsync`` files and directories are flushed.
 4. Any failure so far removes the candidate and leaves the live generation untouched.
 5. Create the links ``name -> ..data/name`` that are new, so that each name resolves the moment
    ``..data`` flips (until then they dangle, which a reader sees as "not there yet").
 6. Swap: name the candidate for the current time (rename(2) of its directory), point a uniquely
    named temporary link at it and rename(2) that over ``..data``. This is the only step readers can
    observe, and it is atomic. With ``fsync`` the target is flushed.
 7. Remove the links of names that are gone; only links that point into ``..data/`` are ever removed.
 8. Mark the old generation stale (garbage.py): it stays for a grace period, then is reused by a later
    change or preparation, or removed when the caller collects garbage.

``prepare`` makes ahead what steps 2 and 3 use; ``open`` is what a restart finds (recovery.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from ..settings import Ownership
from .ahead import Blanks
from .candidates import Candidates
from .fill import Filler
from .garbage import GRACE_SECONDS, Stale
from .layout import (
    DATA_LINK,
    TEMP_LINK_PREFIX,
    Generation,
    Rejected,
    WriteError,
    describe,
    fsync_directory,
)
from .recovery import is_our_link, open_target

log = logging.getLogger(__name__)


class Writer:
    """Owns one target directory: writes generations into it and swaps them in."""

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
        self._live: Generation | None = None
        self._names: set[str] = set()  # the live generation's top-level names
        self._links: set[str] = set()  # our links in the target
        self._stale = Stale(target, grace, clock)
        self._ahead: Generation | None = None  # the next generation, made ahead
        self._blanks = Blanks(target, ownership)
        self._filler = Filler(self._prefix, ownership, fsync, self._blanks)
        self._candidates = Candidates(target, ownership, self._stale)

    def open(self) -> None:
        """Create the target if missing, clean crash leftovers, and index the live generation."""
        found = open_target(self.target, self.ownership)
        self._live, self._links = found.live, found.links
        if self._live is not None:
            self._names = _top_level_names(self._live.files)

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
        return os.path.lexists(self.target / name) and not is_our_link(self.target, name)

    def read(self, path: str) -> bytes:
        """A file's content in the live generation."""
        assert self._live is not None
        with open(self.target / self._live.name / path, "rb") as handle:
            return handle.read()

    @property
    def has_garbage(self) -> bool:
        return self._stale.pending

    # -- writing -------------------------------------------------------------------------------------------

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
        if live is not None and wanted == live.files and self._links == names:  # 1
            return False
        ready, self._ahead = self._ahead, None
        candidate, root = self._candidates.get(ready, newer=1)  # 2
        try:
            self._filler.fill(candidate, root, wanted, content, live)  # 3
            if accept is not None and not accept(self.target / candidate.name):
                self._stale.remove(candidate.name)
                raise Rejected(candidate.name)
            self._link(names - self._links)  # 5
        except OSError as exc:
            self._stale.remove(candidate.name)  # 4
            raise WriteError(describe(exc, self.target / candidate.name)) from None
        finally:
            os.close(root)
        self._swap(candidate)  # 6
        self._unlink(self._links - names)  # 7
        if live is not None:  # 8
            self._stale.add(live)
        self._live = candidate
        self._names = self._links = names  # both only ever replaced, never changed in place
        return True

    def _link(self, names: set[str]) -> None:
        for name in sorted(names):
            if not is_our_link(self.target, name):  # one left dangling by a failed swap is reused
                os.symlink(f"{DATA_LINK}/{name}", self.target / name)

    def _swap(self, candidate: Generation) -> None:
        """Name the candidate for this moment and rename a link to it over ``..data``."""
        candidate.name = self._candidates.rename(candidate.name)  # removed if it cannot be
        temporary = self._prefix + TEMP_LINK_PREFIX + secrets.token_hex(8)
        try:
            os.symlink(candidate.name, temporary)
            os.rename(temporary, self._prefix + DATA_LINK)
            if self.fsync:
                fsync_directory(str(self.target))
        except OSError as exc:
            self._stale.remove(candidate.name)
            with contextlib.suppress(OSError):  # left for open() to clean if the target is read-only
                os.unlink(temporary)
            raise WriteError(describe(exc, self.target / DATA_LINK)) from None

    def _unlink(self, names: set[str]) -> None:
        for name in names:
            if is_our_link(self.target, name):
                try:
                    os.unlink(self.target / name)
                except OSError as exc:
                    log.warning("cannot remove link %s: %s", name, exc.strerror)

    # -- ahead and after -------------------------------------------------------------------------------------

    def prepare(self) -> None:
        """Make ahead what the next change needs but does not depend on (ahead.py). Each part that
        cannot be made now is made by the change itself."""
        # Not from a generation found at start: it may hold odd files, which its first change replaces.
        if self._ahead is None and self._live is not None and self._live.directories is not None:
            self._ahead = self._twin()
        try:
            self._blanks.fill()
        except OSError as exc:
            log.debug("cannot make blank files ahead (files are created when needed): %s", exc.strerror)

    def _twin(self) -> Generation | None:
        """The next generation, made equal to the live one: a stale one due for removal if there is
        one (it differs by the last few changes), else a new one (every file linked)."""
        assert self._live is not None
        try:
            twin, root = self._candidates.get(None, newer=0)
        except WriteError as exc:
            log.debug("cannot prepare the next generation: %s", exc)
            return None
        try:
            self._filler.fill(twin, root, self._live.files, self.read, self._live)  # all linked: none read
        except OSError as exc:
            log.debug("cannot prepare the next generation: %s", describe(exc, self.target / twin.name))
            self._stale.remove(twin.name)
            return None
        finally:
            os.close(root)
        return twin

    def collect_garbage(self, everything: bool = False) -> None:
        """Remove the stale generations due (garbage.py); ``everything``: all of them."""
        self._stale.collect(everything)

    def close(self) -> None:
        """Remove what was made ahead: nothing of ours is left half-made."""
        self._blanks.close()
        ready, self._ahead = self._ahead, None
        if ready is not None:
            self._stale.remove(ready.name)


def _top_level_names(paths: Iterable[str]) -> set[str]:
    return {path.split("/", 1)[0] for path in paths}
