"""Keys of several prefixes that land on one path: the rule, the same whatever order they come in, is
that the key of the ``--prefix`` given first wins (the lowest rank); the others wait, one warning each
naming both keys (never a value), and the next in rank takes the path when the winner goes.

Only contested paths cost anything: the rank of a path's key is remembered when it is not 0, and a
waiting key's value (decoded, as it would be written) is held in memory, as for any key that is valid
but refused, so that it is projected without asking etcd again when its turn comes.
"""

from __future__ import annotations

import logging

from .keys import printable

log = logging.getLogger(__name__)

# A waiting key's value: its bytes as they would be written, or (a str) why it does not decode.
Waiting = bytes | str


class Contest:
    def __init__(self) -> None:
        self.ranks: dict[str, int] = {}  # path -> the rank of the key holding it, when not 0
        self.waiting: dict[str, dict[int, Waiting]] = {}  # path -> rank -> value, for the losers

    def rank(self, path: str) -> int:
        return self.ranks.get(path, 0)

    def hold(self, path: str, rank: int) -> None:
        """The key of ``rank`` holds ``path`` now."""
        if rank:
            self.ranks[path] = rank
        else:
            self.ranks.pop(path, None)

    def wait(self, path: str, rank: int, value: Waiting, key: bytes, winner: bytes) -> bool:
        """A key that loses ``path`` to ``winner`` waits with its value; whether it is new."""
        waiting = self.waiting.setdefault(path, {})
        new = rank not in waiting
        waiting[rank] = value
        if new:
            log.warning(
                "refusing key %s: %s lands on the same path %r, and the first --prefix given wins",
                printable(key),
                printable(winner),
                path,
            )
        return new

    def leave(self, path: str, rank: int) -> bool:
        """A waiting key is gone; whether it was waiting."""
        waiting = self.waiting.get(path)
        if waiting is None or rank not in waiting:
            return False
        del waiting[rank]
        if not waiting:
            del self.waiting[path]
        return True

    def next_in_rank(self, path: str) -> tuple[int, Waiting] | None:
        """The winner has gone: the waiting key that takes ``path`` (its rank and value), if any."""
        waiting = self.waiting.get(path)
        if not waiting:
            return None
        rank = min(waiting)
        value = waiting.pop(rank)
        if not waiting:
            del self.waiting[path]
        return rank, value

    def __len__(self) -> int:
        """How many keys wait."""
        return sum(len(waiting) for waiting in self.waiting.values())
