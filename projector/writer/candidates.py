"""Where the generation a change writes into comes from (step 2 of ``Writer.apply``).

In order of preference: the one made ahead (ahead.py), if its directories are as the writer left them;
else a stale generation due for removal (garbage.py), if intact, renamed to a new name: it already
holds most files, so the change costs what differs, not the whole tree; else a new, empty directory
created exclusively with the directory mode and owner. A generation that someone else changed is
removed, never reused. Renaming a reused generation makes a reader still holding its old name fail to
open files ("no such file or directory") rather than read a mix of two generations.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..settings import Ownership
from .fill import intact
from .garbage import Stale
from .layout import Generation, WriteError, describe, generation_names, open_directory

log = logging.getLogger(__name__)


class Candidates:
    """Hands out generation directories to fill, opened, for one target."""

    def __init__(self, target: Path, ownership: Ownership, stale: Stale) -> None:
        self.target = target
        self._prefix = f"{target}/"
        self.ownership = ownership
        self._stale = stale

    def get(self, ready: Generation | None, newer: int) -> tuple[Generation, int]:
        """A generation to fill, and its directory opened: ``ready`` (the one prepared), else a stale
        one due for removal, else a new one. ``newer``: see ``Stale.take_due``."""
        if ready is not None:
            root = self._open_intact(ready)
            if root is not None:
                return ready, root
            self._stale.discard(ready)
        spare = self._stale.take_due(newer)
        if spare is None:
            return self._new_generation()
        root = self._open_intact(spare)
        if root is None:
            self._stale.discard(spare)
            return self._new_generation()
        old = spare.name
        try:
            spare.name = self.rename(old)
        except WriteError:
            os.close(root)
            raise
        log.debug("reusing generation %s as %s", old, spare.name)
        return spare, root

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

    def _open_intact(self, generation: Generation) -> int | None:
        """The generation's directory opened, if its directories are as the writer left them."""
        if generation.directories is None:
            return None
        try:
            root = open_directory(self._prefix + generation.name)
        except OSError:
            return None
        if intact(root, generation.directories):
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
                return Generation(name, {}, {}), open_directory(self._prefix + name)
            except OSError as exc:
                self._stale.remove(name)
                raise WriteError(describe(exc, self.target / name)) from None
        raise AssertionError("unreachable")
