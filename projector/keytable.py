"""The key table: what the dispenser knows of the keys under the prefix, between etcd and the writer.

It takes batches from the source (a snapshot replaces everything; a change batch updates the keys it
names) and hands the writer what to change: path -> digest, or None for a path to remove, and the bytes
of any path it has to write. Pure logic over the batches; the writer is asked only which top-level
names in the target are the operator's, and for the bytes of a file that is on disk and must be kept
aside.

Every step costs what the batch touches, not the size of the prefix: where each key goes is decided
for the keys that come or go and the keys below them (a file ``a`` wins over ``a/b``, whatever the
order; when ``a`` goes, ``a/b`` comes back), never by a pass over every key. Keys refused for the
operator's own file in the target are looked at again whenever keys come or go.

Memory holds a digest per key, not values: a value is kept only while it is not on disk (changed since
the last successful write, or valid but refused because it conflicts with another key or a file the
operator keeps in the target), so that a failed write can be retried and a refused key projected once
its conflict goes away. Keys that the operator's selection leaves out are remembered by name only (the
freshness check counts them), never with their values.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Protocol

from .batches import Batch
from .digests import digest
from .keys import RefusedKey, Selection, printable, relative_path
from .paths import directories_above, top_name

log = logging.getLogger(__name__)


class Target(Protocol):
    """What the key table asks of the writer."""

    def is_foreign(self, name: str) -> bool: ...

    def foreign_names(self) -> set[str]: ...

    def read(self, path: str) -> bytes: ...


class KeyTable:
    """Keyed by path: a valid key is its prefix and its path, so only the path is kept (a key's bytes
    are worked out again for a log line)."""

    def __init__(self, prefix: bytes, target: Target, selection: Selection | None = None) -> None:
        self.prefix = prefix
        self.target = target
        self.selection = selection or Selection()
        self.digests: dict[str, bytes] = {}  # the path of every valid, selected key -> its value's digest
        self.invalid: dict[bytes, str] = {}  # keys refused for their name -> why
        self.excluded: set[str] = set()  # paths the selection leaves out: their names, never values
        self.held: dict[str, bytes] = {}  # values not on disk
        self.revision = 0  # of the newest batch taken in
        self._below: dict[str, set[str]] = {}  # directory -> the paths of keys below it
        self._refused: dict[str, str] = {}  # path -> why it is not projected: a conflict, a foreign file
        self._foreign: dict[str, set[str]] = {}  # the operator's top-level name -> paths refused for it
        self._changes: dict[str, bytes | None] = {}  # path -> digest, or None to remove: to be written
        self._displaced: set[str] = set()  # paths refused now whose value is only on disk
        self._warned: dict[str, str] = {}  # refused path -> the reason it was last warned for
        self._foreign_now: set[str] | None = None  # while a snapshot is taken in: the target's, read once

    # -- taking batches in ---------------------------------------------------------------------------------

    def absorb(self, batch: Batch) -> None:
        """Take a batch in: a snapshot replaces every key, a change batch the keys it names."""
        came_or_went = False
        paths = {key: self._valid_path(key) for key in batch.changes}
        if batch.snapshot:
            self._foreign_now = self.target.foreign_names()
            known = self.digests.keys() | self.excluded
            for gone in known - set(paths.values()) if known else ():
                self._forget(gone)
            for key in self.invalid.keys() - batch.changes.keys():
                del self.invalid[key]
        try:
            for key, value in batch.changes.items():
                path = paths[key]
                if path is None:
                    came_or_went |= self._invalid(key, value)
                elif value is None:
                    came_or_went |= self._forget(path)
                else:
                    came_or_went |= self._put(path, value)
        finally:
            self._foreign_now = None
        if came_or_went and self._foreign:
            self._look_again_at_foreign()
        self.revision = max(self.revision, batch.revision)

    def _valid_path(self, key: bytes) -> str | None:
        try:
            return relative_path(key, self.prefix)
        except RefusedKey:
            return None

    def _invalid(self, key: bytes, value: bytes | None) -> bool:
        """A key whose name cannot be a path: refused, with one warning, its value never kept."""
        if value is None:
            return self.invalid.pop(key, None) is not None
        if key in self.invalid:
            return False
        try:
            relative_path(key, self.prefix)
        except RefusedKey as refusal:
            self.invalid[key] = str(refusal)
            log.warning("refusing key %s: it %s", printable(key), refusal)
        return True

    def _put(self, path: str, value: bytes) -> bool:
        """A key's new value; whether the key is new."""
        new = digest(value)
        old = self.digests.get(path)
        if old is not None:
            if new != old:
                self.digests[path], self.held[path] = new, value
                if path not in self._refused:
                    self._changes[path] = new
            return False
        if path in self.excluded:
            return False
        if self.selection and not self.selection.selects(path):
            self.excluded.add(path)
            return True
        self.digests[path], self.held[path] = new, value
        for directory in directories_above(path):
            self._below.setdefault(directory, set()).add(path)
        self._place(path, projected=False)
        for below in list(self._below.get(path, ())):  # a file wins over the keys below it
            self._place(below, projected=below not in self._refused)
        return True

    def _forget(self, path: str) -> bool:
        """A key is gone; whether it was there."""
        if path in self.excluded:
            self.excluded.discard(path)
            return True
        if path not in self.digests:
            return False
        del self.digests[path]
        self.held.pop(path, None)
        self._displaced.discard(path)
        if path in self._refused:
            self._unrefuse(path)
        else:
            self._changes[path] = None
        for directory in directories_above(path):
            paths = self._below[directory]
            paths.discard(path)
            if not paths:
                del self._below[directory]
        for below in list(self._below.get(path, ())):  # keys below a file that is gone
            self._place(below, projected=below not in self._refused)
        return True

    # -- placing keys ----------------------------------------------------------------------------------------

    def _place(self, path: str, projected: bool) -> None:
        """Decide whether ``path`` is projected now, and record what that changes (``projected``: it was)."""
        why = self._why_refused(path)
        if why is None:
            if not projected:
                self._unrefuse(path)
                self._changes[path] = self.digests[path]
            return
        if projected:
            self._changes[path] = None
            if path not in self.held:
                self._displaced.add(path)  # on disk now: read it before the change removes it
        if self._refused.get(path) != why:
            self._unrefuse(path)
            self._refused[path] = why
            if why.startswith("would replace"):
                self._foreign.setdefault(top_name(path), set()).add(path)
            if self._warned.get(path) != why:
                log.warning("refusing key %s: it %s", printable(self._key(path)), why)
                self._warned[path] = why

    def _why_refused(self, path: str) -> str | None:
        for directory in directories_above(path):
            if directory in self.digests:
                return f"is below {printable(self._key(directory))}, which is a file"
        top = top_name(path)
        foreign = top in self._foreign_now if self._foreign_now is not None else self.target.is_foreign(top)
        return f"would replace {top!r} in the target, which this tool did not create" if foreign else None

    def _unrefuse(self, path: str) -> None:
        if self._refused.pop(path, None) is None:
            return
        self._warned.pop(path, None)
        top = top_name(path)
        paths = self._foreign.get(top)
        if paths is not None:
            paths.discard(path)
            if not paths:
                del self._foreign[top]

    def _look_again_at_foreign(self) -> None:
        """Keys came or went: keys refused for the operator's file are projected if it is gone."""
        for top, paths in list(self._foreign.items()):
            if not self.target.is_foreign(top):
                for path in list(paths):
                    self._place(path, projected=False)

    def _key(self, path: str) -> bytes:
        return self.prefix + path.encode()

    # -- what the writer asks --------------------------------------------------------------------------------

    def changes(self) -> Mapping[str, bytes | None]:
        """What the target must change: path -> digest, or None to remove."""
        for path in self._displaced:
            self.held[path] = self.target.read(path)
        self._displaced.clear()
        return self._changes

    def value(self, path: str) -> bytes:
        """The bytes of a path to write."""
        return self.held[path]

    def written(self) -> None:
        """The target now holds the changes: forget them, and the values that are on disk."""
        for path, new in self._changes.items():
            if new is not None and path not in self._refused:
                self.held.pop(path, None)
        self._changes = {}
        if not self.held:
            self.held = {}  # an emptied dict keeps its size: 2 MiB after a snapshot of 50,000 keys

    @property
    def count(self) -> int:
        """How many keys are under the prefix in etcd, as far as the batches taken in tell."""
        return len(self.digests) + len(self.invalid) + len(self.excluded)

    @property
    def refused(self) -> int:
        """How many keys are refused now."""
        return len(self.invalid) + len(self._refused)
