"""Replaced generations: kept, brought up to date and reused, or removed.

A reader that resolved ``..data`` just before a swap may still be reading the generation it replaced,
so a replaced generation is not touched for ``GRACE_SECONDS``, nor while it is one of the newest
``MAX_STALE``. After that it is due: the next generation is made from the oldest one due, brought up to
date with what changed since (candidates.py), which costs what changed, not the size of the tree. So
the newest ``KEPT`` replaced generations stay as the material of the next changes, and once past the
grace each is brought up to date when nothing else happens (swap.py): no value that changed or went
stays on disk longer than the grace. Older ones are removed when the dispenser collects garbage (when
no change is waiting: a 10,000-file tree takes about as long to remove as to link).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from .layout import Generation, remove_tree

GRACE_SECONDS = 5.0
MAX_STALE = 3  # replaced generations never touched, newest first, whatever their age
KEPT = MAX_STALE + 1  # replaced generations kept for reuse

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
        """The oldest replaced generation that may be reused, taken out, counting ``newer`` generations
        that will be replaced before it is used: 1 while the live generation is about to be replaced,
        else 0. The oldest: what it lacks is known back to it, and older ones would hold that back."""
        now = self.clock()
        count = len(self._generations)
        for index, generation in enumerate(self._generations):
            rank = count - 1 - index + newer  # 0: the newest
            if generation.directories is not None and (
                rank >= MAX_STALE or now - generation.stale_since >= self.grace
            ):
                del self._generations[index]
                return generation
        return None

    def take_behind(self, epoch: int) -> Generation | None:
        """A reusable generation past its grace that holds less than ``epoch``, taken out (to be brought
        up to date and put back)."""
        now = self.clock()
        for index, generation in enumerate(self._generations):
            if (
                generation.directories is not None
                and generation.epoch < epoch
                and now - generation.stale_since >= self.grace
            ):
                del self._generations[index]
                return generation
        return None

    def put_back(self, generation: Generation) -> None:
        """A generation taken out is kept again, in its place by age."""
        self._generations.append(generation)
        self._generations.sort(key=lambda g: g.stale_since)

    def behind(self, epoch: int) -> bool:
        """Whether a reusable generation holds less than ``epoch`` (it is brought up to date after its
        grace)."""
        return any(g.directories is not None and g.epoch < epoch for g in self._generations)

    @property
    def oldest_epoch(self) -> int | None:
        """What the oldest reusable generation holds: the history must reach back to it."""
        epochs = [g.epoch for g in self._generations if g.directories is not None]
        return min(epochs, default=None)

    def collect(self, everything: bool = False) -> None:
        """Remove the replaced generations beyond the newest ``KEPT``, and those that cannot be reused;
        with ``everything``, all of them (nobody will read them: we are about to exit without a
        child)."""
        kept = [] if everything else [g for g in self._generations if g.directories is not None][-KEPT:]
        for generation in self._generations:
            if generation not in kept:
                self.remove(generation.name)
        self._generations = kept
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
        reusable = [g for g in self._generations if g.directories is not None]
        return bool(self._abandoned) or len(self._generations) > len(reusable[-KEPT:])
