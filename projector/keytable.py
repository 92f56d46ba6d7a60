"""The key table: what the dispenser knows of the keys under the prefixes, between etcd and the writer.

It takes batches from the source (a snapshot replaces everything; a change batch updates the keys it
names) and answers with a :class:`~.placement.Plan`: what the target must change (path -> digest, or
None for a path to remove) and the bytes of every path to write. Once the plan is written, ``commit``
forgets what is on disk. Pure logic over the batches: the target is a view passed in to each call
(which top-level names are the operator's; the bytes of a file on disk that the table must keep),
never a collaborator it holds, and it never calls the writer's writing side.

This is the key-level half: each key's place (mount.py: its path and its prefix's rank), the keys that
are not projected (names that cannot be paths, keys the selection or the items leave out, values that
do not decode, keys that lose a path to another prefix's: contest.py), and decoding (decoding.py).
Keys left out are remembered by name only (the freshness check counts them), never with their values.
A value that does not decode is refused like a key (counted in ``refused``), and its path keeps what it
held. What happens to the projected paths is placement.py's: every step costs what the batch touches.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from .batches import Batch
from .contest import Contest, Waiting
from .decoding import Decoding, Undecodable
from .keys import Excluded, RefusedKey, Selection, printable
from .mount import UNCHOSEN, Mount, Mounts
from .placement import Placement, Plan, TargetView

log = logging.getLogger(__name__)


class KeyTable:
    """Keyed by path: a valid key is its prefix and its path, so only the path is kept (a key's bytes
    are worked out again for a log line)."""

    def __init__(
        self,
        mounts: Mount | Sequence[Mount],
        selection: Selection | None = None,
        decoding: Decoding | None = None,
        reserved: set[str] | None = None,
        keep_values: bool = False,
    ) -> None:
        self.mounts = Mounts(mounts)
        self.selection = selection or Selection()
        self.decoding = decoding or Decoding()
        self.invalid: dict[bytes, str] = {}  # keys refused for their name -> why
        self.excluded = Excluded()  # the keys the selection leaves out, by path and rank
        self.contest = Contest()  # keys of several prefixes on one path (contest.py)
        self.unchosen: set[bytes] = set()  # with --item: the keys no item names (never their values)
        self.undecodable: dict[str, str] = {}  # paths whose value does not decode (--decode) -> why
        self.revision = 0  # of the newest batch taken in
        self.paths = Placement(self._key, reserved or set())
        # With templates: every key's value as written (decoded), for them to read; else values are
        # held only while they are not on disk.
        self.values: dict[str, bytes] | None = {} if keep_values else None
        self.digests = self.paths.digests

    # -- taking batches in ---------------------------------------------------------------------------------

    def absorb(self, batch: Batch, target: TargetView) -> None:
        """Take a batch in: a snapshot replaces every key, a change batch the keys it names; ``target``
        tells which names in the target are the operator's."""
        came_or_went = False
        places = {key: self._place_of(key) for key in batch.changes}
        self.paths.target = target
        try:
            if batch.snapshot:
                self.paths.foreign_now = target.foreign_names()
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
            if came_or_went and self.paths.has_foreign:
                self.paths.look_again_at_foreign()
        finally:
            self.paths.foreign_now = self.paths.target = None
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
        if not (self.digests or self.undecodable or self.excluded.ranks or self.invalid or self.unchosen):
            return  # the first snapshot: nothing known yet
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
        for path in list(self.excluded.ranks):
            for rank in self.excluded.keys_of(path):
                if not here(path, rank):
                    self.excluded.discard(path, rank)
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
            return self.excluded.add(path, rank)
        if path not in self.digests and path not in self.undecodable:
            if rank:  # (a free path has no rank recorded: rank 0 needs nothing)
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
            return self.excluded.discard(path, rank)
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

    def _decoded(self, path: str, value: bytes) -> Waiting:
        try:
            return self.decoding.decode(path, value)
        except Undecodable as refusal:
            return str(refusal)

    def _current(self, path: str) -> Waiting:
        """What the key holding ``path`` projects: its value held, or on disk; why it does not decode."""
        if path in self.undecodable:
            return self.undecodable[path]
        return self.values[path] if self.values is not None else self.paths.current(path)

    def _put(self, path: str, value: bytes, decoded: bool = False) -> bool:
        """A key's new value; whether the key is new."""
        old = self.digests.get(path)
        if self.decoding and not decoded:
            try:
                value = self.decoding.decode(path, value)
            except Undecodable as refusal:
                return self._undecodable(path, str(refusal), old is None)
            self.undecodable.pop(path, None)
        if self.values is not None:
            self.values[path] = value
        return self.paths.put(path, value)

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
        if self.values is not None:
            self.values.pop(path, None)
        return self.paths.forget(path) or undecodable

    def _key(self, path: str) -> bytes:
        return self.mounts.key(path, self.contest.rank(path))

    # -- the plan --------------------------------------------------------------------------------------------

    def plan(self, target: TargetView) -> Plan:
        """What the target must change since the last commit (placement.py)."""
        return self.paths.plan(target)

    def commit(self, plan: Plan) -> None:
        """The target now holds ``plan``."""
        self.paths.commit(plan)

    @property
    def held(self) -> dict[str, bytes]:
        """The values not on disk."""
        return self.paths.held

    @property
    def count(self) -> int:
        """How many keys are under the prefixes in etcd, as far as the batches taken in tell."""
        unknown = sum(1 for path in self.undecodable if path not in self.digests)  # never decoded yet
        left_out = self.excluded.count + len(self.unchosen) + len(self.contest)
        return len(self.digests) + len(self.invalid) + left_out + unknown

    @property
    def refused(self) -> int:
        """How many keys are refused now."""
        undecodable = sum(1 for path in self.undecodable if not self.paths.is_refused(path))
        return len(self.invalid) + self.paths.refused + undecodable + len(self.contest)
