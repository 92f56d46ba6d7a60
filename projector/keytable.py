"""The key table: what the dispenser knows of the keys under the prefix, between etcd and the writer.

It takes batches from the source (a snapshot replaces everything; a change batch updates the keys it
names) and answers what the target must hold: path -> digest, and the bytes of any path the writer
has to write. Pure logic: no threads, no etcd, no file system of its own (the writer is asked what is
on disk).

Keys that the operator's selection leaves out are remembered by name only (so that the freshness
check can count them), never with their values. Memory holds a digest per other key, not values: a
value is kept only while it is not on disk (changed since the last successful write, or valid but
refused because it conflicts with another key or a file the operator keeps in the target), so that a
failed write can be retried and a refused key projected once its conflict goes away. Where each key
goes (the plan: keys.py) is decided anew only when keys come or go; a changed value moves nothing, so
a change costs no pass over every key.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Protocol

from .keys import PathTable, Plan, RefusedKey, Selection, printable
from .source import Batch
from .writer import digest

log = logging.getLogger(__name__)


class Target(Protocol):
    """What the key table asks of the writer."""

    @property
    def files(self) -> Mapping[str, bytes]: ...

    def is_foreign(self, name: str) -> bool: ...

    def read(self, path: str) -> bytes: ...


class KeyTable:
    def __init__(self, prefix: bytes, selection: Selection | None = None) -> None:
        self.paths = PathTable(prefix)
        self.selection = selection or Selection()
        self.digests: dict[bytes, bytes] = {}  # every key projected or refused -> digest of its value
        self.excluded: set[bytes] = set()  # keys the selection leaves out: their names, never values
        self.held: dict[bytes, bytes] = {}  # values not on disk
        self.revision = 0  # of the newest batch taken in
        self._plan: Plan | None = None  # None: keys came or went since it was made
        self._wanted: dict[str, bytes] = {}  # path -> digest, as the plan places the keys
        self._changed: set[bytes] = set()  # keys whose value changed since ``wanted`` last looked
        self._warned: dict[bytes, str] = {}

    def absorb(self, batch: Batch) -> None:
        """Take a batch in: a snapshot replaces every key, a change batch the keys it names."""
        if batch.snapshot:
            for key in (self.digests.keys() | self.excluded) - batch.changes.keys():
                self._forget(key)
        for key, value in batch.changes.items():
            if value is None:
                self._forget(key)
                continue
            if self.selection and self._left_out(key):
                self.excluded.add(key)
                continue
            if key not in self.digests:
                self._plan = None
            self.digests[key] = digest(value)
            self.held[key] = value
            self._changed.add(key)
        self.revision = max(self.revision, batch.revision)

    def wanted(self, target: Target) -> Mapping[str, bytes]:
        """What the target must hold now: path -> digest."""
        plan = self._planned(target)
        for key in self._changed & self.digests.keys():
            path = self.paths.path(key)
            if isinstance(path, str) and plan.paths.get(path) == key:
                self._wanted[path] = self.digests[key]
        self._changed.clear()
        return self._wanted

    def value(self, path: str) -> bytes:
        """The bytes of a wanted path that is not on disk."""
        assert self._plan is not None
        return self.held[self._plan.paths[path]]

    def written(self) -> None:
        """The target now holds ``wanted``: forget the values that are on disk."""
        assert self._plan is not None
        plan = self._plan
        self.held = {key: value for key, value in self.held.items() if self._kept_aside(key, plan)}

    @property
    def keys(self) -> int:
        """How many keys are under the prefix in etcd, as far as the batches taken in tell."""
        return len(self.digests) + len(self.excluded)

    @property
    def refused(self) -> int:
        """How many keys are refused now."""
        return 0 if self._plan is None else len(self._plan.refused)

    def _planned(self, target: Target) -> Plan:
        """Which key goes where; decided anew only when keys come or go."""
        if self._plan is None:
            self._plan = self.paths.plan(self.digests, target.is_foreign)
            self._report(self._plan.refused)
            self._hold_displaced(self._plan, target)
            self._wanted = {path: self.digests[key] for path, key in self._plan.paths.items()}
        return self._plan

    def _left_out(self, key: bytes) -> bool:
        """Whether the selection leaves a valid key out (an invalid one is refused, with a warning)."""
        path = self.paths.path(key)
        return isinstance(path, str) and not self.selection.selects(path)

    def _forget(self, key: bytes) -> None:
        self.excluded.discard(key)
        if key in self.digests:
            self._plan = None
        self.digests.pop(key, None)
        self.held.pop(key, None)
        self.paths.forget(key)

    def _report(self, refused: dict[bytes, str]) -> None:
        """One warning per refused key (again only if its reason changes); never its value."""
        for key, reason in refused.items():
            if self._warned.get(key) != reason:
                log.warning("refusing key %s: it %s", printable(key), reason)
        self._warned = refused

    def _hold_displaced(self, plan: Plan, target: Target) -> None:
        """Keep the value of a key that is on disk now but refused from this change on."""
        files = target.files
        for key in plan.refused:
            path = self.paths.path(key)
            if key in self.held or isinstance(path, RefusedKey):
                continue
            if files.get(path) == self.digests[key]:
                self.held[key] = target.read(path)

    def _kept_aside(self, key: bytes, plan: Plan) -> bool:
        """Whether a value must stay in memory: valid, but not on disk."""
        return key in plan.refused and not isinstance(self.paths.path(key), RefusedKey)
