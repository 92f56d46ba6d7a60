"""The key table: what the dispenser knows of the keys under the prefix, between etcd and the writer.

It takes batches from the source (a snapshot replaces everything; a change batch updates the keys it
names) and answers with a :class:`Plan`: what the target must change (path -> digest, or None for a path
to remove) and the bytes of every path to write. Once the plan is written, ``commit`` forgets what is on
disk. Pure logic over the batches: the target is a view passed in to each call (which top-level names
are the operator's; the bytes of a file on disk that the plan takes away but the table must keep), never
a collaborator it holds, and it never calls the writer's writing side.

Every step costs what the batch touches, not the size of the prefix: where each key goes is decided
for the keys that come or go and the keys below them (a file ``a`` wins over ``a/b``, whatever the
order; when ``a`` goes, ``a/b`` comes back), never by a pass over every key. Keys refused for the
operator's own file in the target are looked at again whenever keys come or go.

Memory holds a digest per key, not values: a value is kept only while it is not on disk (changed since
the last successful write, or valid but refused because it conflicts with another key or a file the
operator keeps in the target), so that a failed write can be retried and a refused key projected once
its conflict goes away. Keys that the operator's selection leaves out are remembered by name only (the
freshness check counts them), never with their values.

With ``--decode``, a file holds the decoded value (decoding.py); the digest is of the decoded bytes.
A value that does not decode is refused like a key (counted in ``refused``), and its path keeps what
it held: the key table simply does not take the new value in.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from .batches import Batch
from .contest import Contest, Waiting
from .decoding import Decoding, Undecodable
from .digests import digest
from .keys import RefusedKey, Selection, printable
from .mount import UNCHOSEN, Mount, Mounts
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


class KeyTable:
    """Keyed by path: a valid key is its prefix and its path, so only the path is kept (a key's bytes
    are worked out again for a log line)."""

    def __init__(
        self,
        mounts: Mount | Sequence[Mount],
        selection: Selection | None = None,
        decoding: Decoding | None = None,
    ) -> None:
        self.mounts = Mounts(mounts)
        self.selection = selection or Selection()
        self.decoding = decoding or Decoding()
        self.digests: dict[str, bytes] = {}  # the path of every valid, selected key -> its value's digest
        self.invalid: dict[bytes, str] = {}  # keys refused for their name -> why
        self.excluded: dict[str, int] = {}  # paths the selection leaves out -> their keys' ranks, as bits
        self.contest = Contest()  # keys of several prefixes on one path (contest.py)
        self.unchosen: set[bytes] = set()  # with --item: the keys no item names (never their values)
        self.undecodable: dict[str, str] = {}  # paths whose value does not decode (--decode) -> why
        self.held: dict[str, bytes] = {}  # values not on disk
        self.revision = 0  # of the newest batch taken in
        self._below: dict[str, set[str]] = {}  # directory -> the paths of keys below it
        self._refused: dict[str, str] = {}  # path -> why it is not projected: a conflict, a foreign file
        self._foreign: dict[str, set[str]] = {}  # the operator's top-level name -> paths refused for it
        self._changes: dict[str, bytes | None] = {}  # path -> digest, or None to remove: to be written
        self._displaced: set[str] = set()  # paths refused now whose value is only on disk
        self._warned: dict[str, str] = {}  # refused path -> the reason it was last warned for
        self._excluded_keys = 0  # the keys that ``excluded`` stands for
        self._foreign_now: set[str] | None = None  # while a snapshot is taken in: the target's, read once
        self._target: TargetView | None = None  # while a batch is taken in: the view it was given

    # -- taking batches in ---------------------------------------------------------------------------------

    def absorb(self, batch: Batch, target: TargetView) -> None:
        """Take a batch in: a snapshot replaces every key, a change batch the keys it names; ``target``
        tells which names in the target are the operator's."""
        came_or_went = False
        places = {key: self._place_of(key) for key in batch.changes}
        self._target = target
        try:
            if batch.snapshot:
                self._foreign_now = target.foreign_names()
                self._drop_absent(batch.changes.keys(), places.values())
            for key, value in batch.changes.items():
                place = places[key]
                if place is None:
                    came_or_went |= self._invalid(key, value)
                elif place[0] is UNCHOSEN:
                    came_or_went |= self._unchosen(key, value)
                elif value is None:
                    came_or_went |= self._remove(*place)
                else:
                    came_or_went |= self._set(*place, value, key)
            if came_or_went and self._foreign:
                self._look_again_at_foreign()
        finally:
            self._foreign_now = self._target = None
        self.revision = max(self.revision, batch.revision)

    def _place_of(self, key: bytes) -> tuple[str, int] | None:
        """The key's path (``UNCHOSEN`` for a key no item names) and rank; None for a name that cannot
        be a path."""
        try:
            return self.mounts.place(key)
        except RefusedKey:
            return None

    def _drop_absent(self, keys: Iterable[bytes], places: Iterable[tuple[str, int] | None]) -> None:
        """A snapshot: every key it does not hold is gone. Set operations over the paths of the first
        mount; a key of another one is looked at alone."""
        first: set[str] = set()
        ranked: set[tuple[str, int]] = set()
        for place in places:
            if place is not None and place[1]:
                ranked.add(place)
            elif place is not None:
                first.add(place[0])

        def here(path: str, rank: int) -> bool:
            return path in first if rank == 0 else (path, rank) in ranked

        known = self.digests.keys() | self.undecodable.keys()
        gone = [path for path in known - first if not here(path, self.contest.rank(path))] if known else []
        gone += [path for path, rank in self.contest.ranks.items() if path in first and not here(path, rank)]
        for path in gone:
            self._remove(path, self.contest.rank(path))
        for path, waiting in list(self.contest.waiting.items()):
            for rank in [rank for rank in waiting if not here(path, rank)]:
                self.contest.leave(path, rank)
        for path, ranks in list(self.excluded.items()):
            for rank in [rank for rank in range(len(self.mounts)) if ranks >> rank & 1]:
                if not here(path, rank):
                    self._unexclude(path, rank)
        present = set(keys)
        for key in self.invalid.keys() - present:
            del self.invalid[key]
        self.unchosen &= present

    def _unchosen(self, key: bytes, value: bytes | None) -> bool:
        """A key that no ``--item`` names: only counted."""
        if value is None:
            if key not in self.unchosen:
                return False
            self.unchosen.discard(key)
        else:
            if key in self.unchosen:
                return False
            self.unchosen.add(key)
        return True

    def _invalid(self, key: bytes, value: bytes | None) -> bool:
        """A key whose name cannot be a path: refused, with one warning, its value never kept."""
        if value is None:
            return self.invalid.pop(key, None) is not None
        if key in self.invalid:
            return False
        try:
            self.mounts.place(key)
        except RefusedKey as refusal:
            self.invalid[key] = str(refusal)
            log.warning("refusing key %s: it %s", printable(key), refusal)
        return True

    def _set(self, path: str, rank: int, value: bytes, key: bytes) -> bool:
        """A key's value, from the mount of ``rank``; whether the key is new. Of two keys on one path,
        the one of the lower rank holds it (contest.py)."""
        if self.selection and not self.selection.selects(path):
            return self._exclude(path, rank)
        if path not in self.digests and path not in self.undecodable:
            self.contest.hold(path, rank)
            return self._put(path, value)
        holder = self.contest.rank(path)
        if rank == holder:
            return self._put(path, value)
        if rank > holder:
            return self.contest.wait(path, rank, self._decoded(path, value), key, self._key(path))
        self.contest.wait(path, holder, self._current(path), self._key(path), key)  # the holder waits
        self.contest.hold(path, rank)
        self.undecodable.pop(path, None)
        self._put(path, value)
        return True

    def _remove(self, path: str, rank: int) -> bool:
        """The key of ``rank`` on ``path`` is gone; whether it was there. The next in rank takes it."""
        if path in self.excluded:
            return self._unexclude(path, rank)
        if path not in self.digests and path not in self.undecodable:
            return False
        if rank != self.contest.rank(path):
            return self.contest.leave(path, rank)
        self._forget(path)
        self.contest.hold(path, 0)
        following = self.contest.next_in_rank(path)
        if following is not None:
            self.contest.hold(path, following[0])
            value = following[1]
            if isinstance(value, str):
                self._undecodable(path, value, new=True)
            else:
                self._put(path, value, decoded=True)
        return True

    def _exclude(self, path: str, rank: int) -> bool:
        ranks = self.excluded.get(path, 0)
        if ranks >> rank & 1:
            return False
        self.excluded[path] = ranks | 1 << rank
        self._excluded_keys += 1
        return True

    def _unexclude(self, path: str, rank: int) -> bool:
        ranks = self.excluded.get(path, 0)
        if not ranks >> rank & 1:
            return False
        ranks &= ~(1 << rank)
        if ranks:
            self.excluded[path] = ranks
        else:
            del self.excluded[path]
        self._excluded_keys -= 1
        return True

    def _decoded(self, path: str, value: bytes) -> Waiting:
        try:
            return self.decoding.decode(path, value)
        except Undecodable as refusal:
            return str(refusal)

    def _current(self, path: str) -> Waiting:
        """What the key holding ``path`` projects: its value held, or on disk; why it does not decode."""
        if path in self.undecodable:
            return self.undecodable[path]
        held = self.held.get(path)
        if held is not None:
            return held
        assert self._target is not None
        return self._target.read(path)

    def _put(self, path: str, value: bytes, decoded: bool = False) -> bool:
        """A key's new value; whether the key is new."""
        old = self.digests.get(path)
        if self.decoding and not decoded:
            try:
                value = self.decoding.decode(path, value)
            except Undecodable as refusal:
                return self._undecodable(path, str(refusal), old is None)
            self.undecodable.pop(path, None)
        new = digest(value)
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
        for below in list(self._below.get(path, ())):  # a file wins over the keys below it
            self._place(below, projected=below not in self._refused)
        return True

    def _undecodable(self, path: str, why: str, new: bool) -> bool:
        """A value that does not decode: not projected (a file keeps its last good content), one
        warning until it decodes again; whether the key is new."""
        if path in self.undecodable:
            return False
        self.undecodable[path] = why
        log.warning("refusing the value of key %s: it %s (--decode)", printable(self._key(path)), why)
        return new

    def _forget(self, path: str) -> bool:
        """A key is gone; whether it was there."""
        undecodable = self.undecodable.pop(path, None) is not None
        if path not in self.digests:
            return undecodable
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
        foreign = top in self._foreign_now if self._foreign_now is not None else self._is_foreign(top)
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
            if not self._is_foreign(top):
                for path in list(paths):
                    self._place(path, projected=False)

    def _is_foreign(self, top: str) -> bool:
        assert self._target is not None  # placing happens only while a batch is taken in
        return self._target.is_foreign(top)

    def _key(self, path: str) -> bytes:
        return self.mounts.key(path, self.contest.rank(path))

    # -- the plan --------------------------------------------------------------------------------------------

    def plan(self, target: TargetView) -> Plan:
        """What the target must change since the last commit. Keys the plan takes off disk while they
        stay in etcd (refused now) keep their bytes: read from ``target`` before it is written."""
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

    @property
    def count(self) -> int:
        """How many keys are under the prefix in etcd, as far as the batches taken in tell."""
        unknown = sum(1 for path in self.undecodable if path not in self.digests)  # never decoded yet
        waiting = len(self.contest)
        return (
            len(self.digests)
            + len(self.invalid)
            + self._excluded_keys
            + len(self.unchosen)
            + unknown
            + waiting
        )

    @property
    def refused(self) -> int:
        """How many keys are refused now."""
        undecodable = sum(1 for path in self.undecodable if path not in self._refused)
        return len(self.invalid) + len(self._refused) + undecodable + len(self.contest)
