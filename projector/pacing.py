"""When to write: ``--wait``, and again after a failed write.

``--wait MIN[:MAX]`` (:class:`Quiet`): write once etcd has been quiet for MIN, but no later than MAX
after the first change that is waiting. What waited is written as one generation with one signal;
batches are whole transactions, so a transaction is never split. A failed write (disk full,
permissions) is tried again by itself (:class:`Retry`), the live generation staying meanwhile. The
delays of both, and of the source's reconnects, grow by :class:`Backoff`.
"""

from __future__ import annotations

import time


class Quiet:
    def __init__(self, shortest: float, longest: float) -> None:
        self.shortest = shortest
        self.longest = longest
        self._first: float | None = None  # when the oldest waiting change arrived
        self._last = 0.0

    def arrived(self) -> None:
        now = time.monotonic()
        if self._first is None:
            self._first = now
        self._last = now

    def remaining(self) -> float | None:
        """Seconds until what waits is due (0: now); None if nothing waits."""
        if self._first is None:
            return None
        due = min(self._last + self.shortest, self._first + self.longest)
        return max(0.0, due - time.monotonic())

    def taken(self) -> None:
        """What waited is being written."""
        self._first = None


class Backoff:
    """Delays that double from ``first`` up to ``most``, until :meth:`reset` (the source's reconnects
    and :class:`Retry`'s writes)."""

    def __init__(self, first: float, most: float) -> None:
        self.first = first
        self.most = most
        self._delay = first

    def next(self) -> float:
        delay, self._delay = self._delay, min(self._delay * 2, self.most)
        return delay

    def reset(self) -> None:
        self._delay = self.first


class Retry:
    """When to try a failed write again: after 0.5 s, doubling with each failed retry up to 30 s, until
    one succeeds."""

    FIRST = 0.5
    MOST = 30.0

    def __init__(self) -> None:
        self._at: float | None = None
        self._backoff = Backoff(self.FIRST, self.MOST)

    @property
    def failing(self) -> bool:
        return self._at is not None

    def failed(self) -> None:
        """A write failed. Only a failed retry puts the next one further off: a write tried early for
        a new change leaves the retry as planned (a stream of changes into a full disk would else
        push it to the longest delay in a moment, and the files would wait that long once it frees)."""
        if self._at is not None and time.monotonic() < self._at:
            return
        self._at = time.monotonic() + self._backoff.next()

    def succeeded(self) -> None:
        self._at = None
        self._backoff.reset()

    def due(self) -> bool:
        return self._at is not None and time.monotonic() >= self._at

    def remaining(self) -> float | None:
        return None if self._at is None else max(0.0, self._at - time.monotonic())
