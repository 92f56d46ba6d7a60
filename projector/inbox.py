"""The main thread's inbox: signals we received and exited children, and a wakeup that signals reach.

Signal handlers run only in the main thread, and only once it runs bytecode again: the main thread
waits on a pipe that ``signal.set_wakeup_fd`` writes to, from whichever thread took the signal, so
that it always does. Other threads use the same pipe to tell it that something needs a look.
"""

from __future__ import annotations

import contextlib
import os
import queue
import select
import signal
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

from .signals import HANDLED


@dataclass(frozen=True)
class Received:
    """A signal that the main loop has to decide about (no command running to forward it to)."""

    signum: int


class ChildEvent:
    """SIGCHLD: some process ended and waits to be reaped."""


Event = Received | ChildEvent


class Inbox:
    """The main thread's queue, with a wakeup pipe that every signal also writes to.

    A signal can be delivered to any thread; Python runs the handler in the main thread only once that
    thread runs bytecode again. Blocking on the pipe (which ``signal.set_wakeup_fd`` writes from the C
    handler, whichever thread took the signal) instead of on a lock guarantees that it does.
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self._read, self._write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def listen(self, on_signal: Callable[[int, FrameType | None], None]) -> None:
        """Signals wake the main thread; those of signals.py's table go to ``on_signal``; SIGCHLD is an
        event."""
        signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        for sig in HANDLED:
            signal.signal(sig, on_signal)
        signal.signal(signal.SIGCHLD, lambda _signum, _frame: self.put(ChildEvent()))

    def put(self, event: Event) -> None:
        """From any thread or signal handler (SimpleQueue.put is reentrant)."""
        self._queue.put(event)
        self.wake()

    def wake(self) -> None:
        """End the main thread's wait, with or without an event: something else needs a look."""
        with contextlib.suppress(BlockingIOError):
            os.write(self._write, b"\0")

    def take(self, timeout: float | None) -> list[Event]:
        """Every waiting event; waits up to ``timeout`` (None: forever) for the first one."""
        events = self._drain()
        if not events:
            select.select([self._read], [], [], timeout)
            with contextlib.suppress(BlockingIOError):
                while os.read(self._read, 4096):
                    pass
            events = self._drain()
        return events

    def _drain(self) -> list[Event]:
        events = []
        while True:
            try:
                events.append(self._queue.get_nowait())
            except queue.Empty:
                return events
