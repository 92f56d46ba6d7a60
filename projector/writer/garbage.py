"""Replaced generations: kept for a while, then reused or removed.

A reader that resolved ``..data`` just before a swap may still be reading the generation it replaced,
so the newest ``MAX_STALE`` replaced generations stay for ``GRACE_SECONDS``; older ones, and those
past the grace, are due. The dispenser collects them (removes them) when no change is waiting: a
10,000-file tree takes about as long to remove as to link, so removal stays off the path from commit
to signal. A change or a preparation that comes first reuses one instead (writer.py, ahead.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from .layout import Generation, remove_tree

GRACE_SECONDS = 5.0
MAX_STALE = 3  # stale generations kept within the grace, at most

log = logging.getLogger(__name__)


class Stale:
    """The replaced generations of one target, oldest first, and those that could not be removed."""

    def __init__(self, target: Path, grace: float, clock: Callable[[], float]) -> None:
        self.target = target
        self.grace = grace
        self.clock = clock
        self._generations: list[Generation] = []
        self._abandoned: set[str] = set()  # generations that could not be removed yet

    def add(self, generation: Generation) -> None:
        """``generation`` was just replaced."""
        generation.stale_since = self.clock()
        self._generations.append(generation)

    def take_due(self, newer: int) -> Generation | None:
        """The newest stale generation due for removal, taken out to be reused, counting ``newer``
        generations that will be stale before it: 1 while the live generation is about to be
        replaced, else 0."""
        now = self.clock()
        for rank, generation in enumerate(reversed(self._generations), start=newer):
            if rank >= MAX_STALE or now - generation.stale_since >= self.grace:
                self._generations.remove(generation)
                return generation
        return None

    def collect(self, everything: bool = False) -> None:
        """Remove the stale generations due for removal (past the grace, or older than the newest
        ``MAX_STALE``); with ``everything``, all of them (nobody will read them: we are about to exit
        without a child)."""
        now = self.clock()
        kept = []
        for rank, generation in enumerate(reversed(self._generations)):
            if everything or rank >= MAX_STALE or now - generation.stale_since >= self.grace:
                self.remove(generation.name)
            else:
                kept.append(generation)
        self._generations = kept[::-1]
        for name in sorted(self._abandoned):
            self.remove(name)

    def discard(self, generation: Generation) -> None:
        """A generation changed by someone else since we left it: never reused."""
        log.info("generation %s was changed by someone else; removing it, not reusing it", generation.name)
        self.remove(generation.name)

    def remove(self, name: str) -> None:
        """Remove a generation of ours; one that cannot be removed now (a read-only target) is tried
        again when garbage is collected, with one warning in all."""
        again = name in self._abandoned
        if remove_tree(str(self.target / name), quiet=again):
            self._abandoned.discard(name)
        else:
            self._abandoned.add(name)

    @property
    def pending(self) -> bool:
        """Whether anything is left to collect."""
        return bool(self._generations or self._abandoned)
