"""Where each projected path stands, and the plan: the path-level half of the key table.

A path is projected, or refused while another key's file is above it (a file ``a`` wins over ``a/b``,
whatever the order; when ``a`` goes, ``a/b`` comes back) or while its top-level name is the operator's
own entry in the target. Every step costs what it touches, not the size of the target: where a path
goes is decided for the paths that come or go and the paths below them, never by a pass over every
path; paths refused for the operator's file are looked at again whenever paths come or go.

Memory holds a digest per path, not values: a value is kept only while it is not on disk (changed
since the last successful write, or refused), so that a failed write can be retried and a refused path
projected once its conflict goes away. The plan is what the target must change since the last commit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from .digests import digest
from .keys import printable
from .paths import directories_above, top_name

log = logging.getLogger(__name__)


class TargetView(Protocol):
    """What the key table asks of the target (the writer answers): questions, never changes."""

    def is_foreign(self, name: str) -> bool: ...

    def foreign_names(self) -> set[str]: ...

    def read(self, path: str) -> bytes: ...


@dataclass(frozen=True)
class Plan:
    """What the target must change: ``changes`` (path -> digest, or None to remove) and, for each path
    it writes, its bytes in ``contents``."""

    changes: Mapping[str, bytes | None]
    contents: Mapping[str, bytes]


class Placement:
    """The projected paths: digests, values held, refusals, and the changes of the next plan.
    ``key_of(path)`` names a path's key in log lines."""

    def __init__(self, key_of: Callable[[str], bytes], reserved: set[str]) -> None:
        self.key_of = key_of
        self.reserved = reserved  # the rendered templates' paths: no key takes them, or the way to them
        self._reserved_above = {d for path in reserved for d in directories_above(path)}
        self.digests: dict[str, bytes] = {}  # every path a key holds -> its value's digest
        self.held: dict[str, bytes] = {}  # values not on disk
        self._below: dict[str, set[str]] = {}  # directory -> the paths below it
        self._refused: dict[str, str] = {}  # path -> why it is not projected: a conflict, a foreign file
        self._foreign: dict[str, set[str]] = {}  # the operator's top-level name -> paths refused for it
        self._changes: dict[str, bytes | None] = {}  # path -> digest, or None to remove: to be written
        self._displaced: set[str] = set()  # paths refused now whose value is only on disk
        self._warned: dict[str, str] = {}  # refused path -> the reason it was last warned for
        self.foreign_now: set[str] | None = None  # while a snapshot is taken in: the target's, read once
        self.target: TargetView | None = None  # while a batch is taken in: the view it was given

    def put(self, path: str, value: bytes) -> bool:
        """A path's new value (as it is to be written); whether the path is new."""
        new = digest(value)
        old = self.digests.get(path)
        if old is not None:
            if new != old:
                self.digests[path], self.held[path] = new, value
                self._displaced.discard(path)  # what is on disk is no longer its value
                if path not in self._refused:
                    self._changes[path] = new
            return False
        self.digests[path], self.held[path] = new, value
        for directory in directories_above(path):
            self._below.setdefault(directory, set()).add(path)
        self._place(path, projected=False)
        for below in list(self._below.get(path, ())):  # a file wins over the paths below it
            self._place(below, projected=below not in self._refused)
        return True

    def forget(self, path: str) -> bool:
        """A path's key is gone; whether it held the path."""
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
        for below in list(self._below.get(path, ())):  # paths below a file that is gone
            self._place(below, projected=below not in self._refused)
        return True

    def current(self, path: str) -> bytes:
        """The value ``path`` holds: held, or on disk."""
        held = self.held.get(path)
        if held is not None:
            return held
        assert self.target is not None
        return self.target.read(path)

    def look_again_at_foreign(self) -> None:
        """Paths came or went: paths refused for the operator's file are projected if it is gone."""
        for top, paths in list(self._foreign.items()):
            if not self._is_foreign(top):
                for path in list(paths):
                    self._place(path, projected=False)

    @property
    def refused(self) -> int:
        return len(self._refused)

    def is_refused(self, path: str) -> bool:
        return path in self._refused

    # -- placing ---------------------------------------------------------------------------------------------

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
                log.warning("refusing key %s: it %s", printable(self.key_of(path)), why)
                self._warned[path] = why

    def _why_refused(self, path: str) -> str | None:
        if self.reserved and (
            path in self.reserved
            or path in self._reserved_above
            or any(d in self.reserved for d in directories_above(path))
        ):
            return "would replace a rendered --template, or the way to one"
        for directory in directories_above(path):
            if directory in self.digests:
                return f"is below {printable(self.key_of(directory))}, which is a file"
        top = top_name(path)
        foreign = top in self.foreign_now if self.foreign_now is not None else self._is_foreign(top)
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

    def _is_foreign(self, top: str) -> bool:
        assert self.target is not None  # placing happens only while a batch is taken in
        return self.target.is_foreign(top)

    @property
    def has_foreign(self) -> bool:
        return bool(self._foreign)

    # -- the plan --------------------------------------------------------------------------------------------

    def plan(self, target: TargetView) -> Plan:
        """What the target must change since the last commit. Paths the plan takes off disk while their
        keys stay (refused now) keep their bytes: read from ``target`` before it is written."""
        for path in self._displaced:
            self.held[path] = target.read(path)
        self._displaced.clear()
        return Plan(self._changes, self.held)

    def commit(self, plan: Plan) -> None:
        """The target now holds ``plan``: forget its changes, and the values that are on disk."""
        assert plan.changes is self._changes, "a plan is committed once, before the next one is made"
        for path, new in self._changes.items():
            if new is not None and path not in self._refused:
                self.held.pop(path, None)
        self._changes = {}
        if not self.held:
            self.held = {}  # an emptied dict keeps its size: 2 MiB after a snapshot of 50,000 keys
