"""Where the generation a change writes into comes from (step 2 of ``Writer.apply``), and what it lacks.

In order of preference: the one made ahead (``Writer.prepare``), if the directories the change
touches are as the writer left them; else the oldest replaced generation that is due (garbage.py), if
intact, renamed to a new name; else a new, empty directory. A generation that someone else changed is
removed, never reused. Renaming a reused generation makes a reader still holding its old name fail to
open files ("no such file or directory") rather than read a mix of two generations.

A generation holds what the live one held some swaps ago (its epoch); :class:`History` remembers which
paths each swap changed, so that bringing it up to date costs what changed since, not the size of the
tree.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from ..settings import Ownership
from .fill import intact
from .garbage import Stale
from .layout import Generation, WriteError, describe, generation_names, open_directory

log = logging.getLogger(__name__)


class History:
    """Which paths each swap changed, back to the oldest generation that may still be brought up to date."""

    def __init__(self) -> None:
        self._changed: dict[int, Iterable[str]] = {}  # epoch -> the paths the swap to it changed

    def add(self, epoch: int, paths: Iterable[str]) -> None:
        self._changed[epoch] = tuple(paths)

    def since(self, epoch: int) -> set[str]:
        """The paths changed by the swaps after ``epoch``."""
        return {path for later, paths in self._changed.items() if later > epoch for path in paths}

    def needed(
        self, epoch: int, live: Mapping[str, bytes], changes: Mapping[str, bytes | None]
    ) -> dict[str, bytes | None]:
        """What a generation of ``epoch`` (-1: new and empty) must change to hold the live files
        (``live``) and then ``changes``: what it lacks of the live ones, and the changes."""
        if epoch < 0:
            needed: dict[str, bytes | None] = dict(live)
        else:
            needed = {path: live.get(path) for path in self.since(epoch)}
        needed.update(changes)
        return needed

    def keep_after(self, epoch: int) -> None:
        """Forget the swaps up to ``epoch``: no generation needs them any more."""
        for old in [e for e in self._changed if e <= epoch]:
            del self._changed[old]


class Candidates:
    """Hands out generation directories to fill, opened, for one target."""

    def __init__(self, target: Path, ownership: Ownership, stale: Stale) -> None:
        self.target = target
        self._prefix = f"{target}/"
        self.ownership = ownership
        self._stale = stale

    def get(self, ready: Generation | None, newer: int, paths: Iterable[str]) -> tuple[Generation, int]:
        """A generation to fill, and its directory opened: ``ready`` (made ahead) if the directories of
        ``paths`` are intact, else the oldest replaced one due, else a new one. ``newer``: see
        ``Stale.take_due``."""
        if ready is not None:
            assert ready.directories is not None
            touched = {path.rpartition("/")[0] for path in paths} | {""}
            root = self._open_intact(ready, {d: m for d, m in ready.directories.items() if d in touched})
            if root is not None:
                return ready, root
            self._stale.discard(ready)
        spare = self._stale.take_due(newer)
        root = None if spare is None else self.reuse(spare)
        if spare is None or root is None:
            return self._new_generation()
        return spare, root

    def reuse(self, spare: Generation) -> int | None:
        """A replaced generation taken out of the stale ones, renamed and its directory opened; None
        (and it is removed) if someone else changed it."""
        assert spare.directories is not None
        root = self._open_intact(spare, spare.directories)
        if root is None:
            self._stale.discard(spare)
            return None
        old = spare.name
        try:
            spare.name = self.rename(old)
        except WriteError:
            os.close(root)
            raise
        log.debug("reusing generation %s as %s", old, spare.name)
        return root

    def rename(self, old: str) -> str:
        """A generation renamed to the current time: a reader still holding its old name fails to open
        files rather than reading a mix of two generations. The name, newer than any before it."""
        for name in generation_names():
            if os.path.lexists(self._prefix + name):
                continue
            try:
                os.rename(self._prefix + old, self._prefix + name)
            except OSError as exc:
                self._stale.remove(old)
                raise WriteError(describe(exc, self.target / old)) from None
            return name
        raise AssertionError("unreachable")

    def _open_intact(self, generation: Generation, directories: dict[str, int]) -> int | None:
        """The generation's directory opened, if ``directories`` of it are as the writer left them."""
        try:
            root = open_directory(self._prefix + generation.name)
        except OSError:
            return None
        if intact(root, directories):
            return root
        os.close(root)
        return None

    def _new_generation(self) -> tuple[Generation, int]:
        for name in generation_names():
            try:
                os.mkdir(self._prefix + name, self.ownership.directory_mode)
            except FileExistsError:
                continue
            except OSError as exc:
                raise WriteError(describe(exc, self.target / name)) from None
            try:
                return Generation(name, {}, epoch=-1), open_directory(self._prefix + name)
            except OSError as exc:
                self._stale.remove(name)
                raise WriteError(describe(exc, self.target / name)) from None
        raise AssertionError("unreachable")
