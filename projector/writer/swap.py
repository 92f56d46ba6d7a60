"""The writer: the one public way the target changes, and the swap.

``Writer.apply`` changes what the target holds by a set of changes (path -> digest, or None to remove),
each step costing what the change touches, not the size of the tree (layout.py draws the layout):

 1. Keep the changes that differ from the live generation. If none does (and every top-level link is
    in place), stop: nothing changes on disk and nobody is told. A dict lookup per changed path.
 2. Get a candidate generation (candidates.py): the one made ahead, which holds what the live one
    holds, else the oldest replaced one due, renamed, else a new one.
 3. Fill the candidate (fill.py) with the changes, plus what it lacks of the live generation: nothing
    for the one made ahead; what the swaps since its time changed for a reused one (the history); every
    file for a new one. Changed files are written into blanks made ahead, mode and owner set before
    the first byte; the rest are hard links to the live files. With ``fsync`` all is flushed.
 4. Any failure so far (or the check's refusal) removes the candidate and the links step 5 made, and
    leaves the live generation untouched.
 5. Create the links ``name -> ..data/name`` for top-level names the change brings (links.py), so that
    each resolves the moment ``..data`` flips (until then they dangle: "not there yet"); after step 3,
    or during it, on a thread of their own, when the change brings many. The live index (live.py)
    counts the files under each top-level directory: which names come and go is known without a pass.
 6. Swap: name the candidate for the current time (rename(2) of its directory), point a uniquely
    named temporary link at it and rename(2) that over ``..data``. This is the only step readers can
    observe, and it is atomic. With ``fsync`` the target is flushed.
 7. Remove the links of names that are gone; only links that point into ``..data/`` are ever removed.
 8. The old live generation is replaced (garbage.py): kept untouched for a grace period, then brought
    up to date with what changed since and reused for a later change; the oldest are removed.

``prepare`` makes steps 2 and 3 cheap: after a swap it brings a replaced generation up to
date (the few swaps since its time), and makes blank files. ``open`` is what a restart finds
(recovery.py); the first change after it is measured against every file found.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from ..settings import Ownership
from . import links
from .blanks import Blanks
from .candidates import Candidates, History
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
from .links import is_our_link, our_names
from .live import LiveIndex
from .recovery import open_target

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
        self._index = LiveIndex({})  # what the live generation holds: path -> digest, and per directory
        self._found: set[str] | None = set()  # at start: every path found, and whether links are right
        self._links_found: set[str] = set()  # at start: our links in the target
        self._epoch = 0  # swaps so far: what the live generation holds
        self._history = History()
        self._stale = Stale(target, grace, clock)
        self._ahead: Generation | None = None  # the next generation, made ahead
        self._blanks = Blanks(target, ownership)
        self._filler = Filler(self._prefix, ownership, fsync, self._blanks)
        self._candidates = Candidates(target, ownership, self._stale)

    def open(self) -> None:
        """Create the target if missing, clean crash leftovers, and index the live generation."""
        found = open_target(self.target, self.ownership)
        self._live, self._links_found = found.live, found.links
        self._index = LiveIndex(found.files)
        self._found = set(found.files)

    # -- questions -----------------------------------------------------------------------------------------

    @property
    def generation(self) -> str | None:
        """The live generation's directory name."""
        return None if self._live is None else self._live.name

    @property
    def files(self) -> Mapping[str, bytes]:
        """The live generation's files: relative path -> digest."""
        return self._index.files

    def is_foreign(self, name: str) -> bool:
        """Whether a top-level name is taken by something this tool did not create."""
        if self._index.under(name):
            return False
        return os.path.lexists(self._prefix + name) and not is_our_link(self.target, name)

    def foreign_names(self) -> set[str]:
        """Every top-level name taken by something this tool did not create (one pass over the target)."""
        return our_names(self.target, theirs=True)

    def read(self, path: str) -> bytes:
        """A file's content in the live generation."""
        assert self._live is not None
        with open(f"{self._prefix}{self._live.name}/{path}", "rb") as handle:
            return handle.read()

    def census(self, changes: Mapping[str, bytes | None]) -> tuple[int, int]:
        """How many live files ``changes`` would remove, and how many files the target would hold."""
        return self._index.census(changes, self._found)

    @property
    def has_garbage(self) -> bool:
        """Whether ``collect_garbage`` has work: generations to remove, or to bring up to date."""
        return self._stale.pending or self._stale.behind(self._epoch)

    # -- writing -------------------------------------------------------------------------------------------

    def apply(
        self,
        changes: Mapping[str, bytes | None],
        content: Callable[[str], bytes],
        accept: Callable[[Path], bool] | None = None,
    ) -> bool:
        """Change what the target holds by ``changes``; True if a new generation went live.

        ``content(path)`` gives the bytes of a changed path. ``accept(candidate)``, if given, sees the
        complete candidate generation before the swap; when it says no, the candidate is removed and
        :class:`Rejected` is raised. The first change after ``open`` is the whole of what the target must
        hold: what was found there and is not in it goes.
        """
        found = self._found
        effective = {path: new for path, new in changes.items() if self._index.files.get(path) != new}  # 1
        if found:
            effective.update((path, None) for path in found if path not in changes)
        appear, vanish = self._names_changed(effective)
        if not effective and not appear and not vanish and self._live is not None:
            self._found = None
            return False
        ready, self._ahead = self._ahead, None
        candidate, root = self._candidates.get(ready, newer=1, paths=effective)  # 2
        try:
            with links.linking(self.target, appear):  # 5, alongside 3
                needed = self._needed(candidate, effective)
                self._filler.fill(candidate, root, needed, content, self._live, self._index.files)  # 3
                if accept is not None and not accept(self.target / candidate.name):
                    self._stale.remove(candidate.name)
                    raise Rejected(candidate.name)
        except OSError as exc:
            self._stale.remove(candidate.name)  # 4
            raise WriteError(describe(exc, self.target / candidate.name)) from None
        finally:
            os.close(root)
        self._swap(candidate)  # 6
        links.remove(self.target, vanish)  # 7
        self._replace(candidate, effective)  # 8
        return True

    def _names_changed(self, effective: Mapping[str, bytes | None]) -> tuple[set[str], set[str]]:
        """The top-level names the changes bring and take away (and, the first time, the links to
        repair: missing ones, and ours for names that are not there)."""
        counts, appear, vanish = self._index.names_changed(effective)
        if self._found is not None:  # the first change since open: make the links right
            missing, wrong = self._index.links_to_fix(counts, self._links_found)
            appear, vanish = appear | missing, vanish | wrong
        return appear, vanish

    def _needed(self, candidate: Generation, changes: Mapping[str, bytes | None]) -> dict[str, bytes | None]:
        return self._history.needed(candidate.epoch, self._index.files, changes)

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

    def _replace(self, candidate: Generation, effective: Mapping[str, bytes | None]) -> None:
        """The candidate is live: the old one replaced, what it holds recorded."""
        if self._live is not None:
            self._stale.add(self._live)
        self._index.record(effective)
        self._epoch += 1
        candidate.epoch, self._live, self._found = self._epoch, candidate, None
        self._history.add(self._epoch, effective)
        self._forget_history()

    def _forget_history(self) -> None:
        """Keep the history back to the oldest generation that may be brought up to date."""
        oldest = [self._stale.oldest_epoch, None if self._ahead is None else self._ahead.epoch]
        self._history.keep_after(min((e for e in oldest if e is not None), default=self._epoch))

    # -- ahead and after -------------------------------------------------------------------------------------

    def prepare(self) -> None:
        """Make ahead what the next change needs but does not depend on: the next generation, and
        blank files (blanks.py). Each part that cannot be made now is made by the change itself."""
        if self._ahead is None and self._live is not None:
            self._ahead = self._twin()
        try:
            self._blanks.fill()
        except OSError as exc:
            log.debug("cannot make blank files ahead (files are created when needed): %s", exc.strerror)

    def _twin(self) -> Generation | None:
        """The next generation, made to hold what the live one holds: the oldest replaced one due,
        brought up to date, or a new one with every file linked."""
        try:
            twin, root = self._candidates.get(None, newer=0, paths=())
        except WriteError as exc:
            log.debug("cannot prepare the next generation: %s", exc)
            return None
        return twin if self._catch_up(twin, root) else None

    def _catch_up(self, generation: Generation, root: int) -> bool:
        """Make a generation taken out of the stale ones hold what the live one holds (its directory
        ``root`` is closed); False if it cannot, and it is removed."""
        try:
            needed = self._needed(generation, {})
            self._filler.fill(generation, root, needed, self.read, self._live, self._index.files)
        except OSError as exc:
            log.debug("cannot bring %s up to date: %s", generation.name, describe(exc, self.target))
            self._stale.remove(generation.name)
            return False
        finally:
            os.close(root)
        generation.epoch = self._epoch
        self._forget_history()
        return True

    def collect_garbage(self, everything: bool = False) -> None:
        """Remove the replaced generations beyond those kept for reuse (garbage.py), and bring those
        kept and past their grace up to date, so that what changed or went is not left on disk;
        ``everything``: remove all of them."""
        self._stale.collect(everything)
        while (generation := self._stale.take_behind(self._epoch)) is not None:
            try:
                root = self._candidates.reuse(generation)
            except WriteError as exc:
                log.debug("cannot bring %s up to date: %s", generation.name, exc)
                continue
            if root is not None and self._catch_up(generation, root):
                self._stale.put_back(generation)
        self._forget_history()

    def close(self) -> None:
        """Remove what was made ahead: nothing of ours is left half-made."""
        self._blanks.close()
        ready, self._ahead = self._ahead, None
        if ready is not None:
            self._stale.remove(ready.name)
