"""The command's life under the dispenser: started once, told of each change (a signal, or a restart),
stopped with escalation, and what its end means for ours.

- ``--signal``: each swap sends the signal, from whichever thread made the swap.
- ``--restart``, for programs that cannot reload: each swap asks the main thread to stop the command
  (SIGTERM) and start it again on the new files once it has exited. Changes that come meanwhile are in
  the files the new command starts with.
- ``--start-grace``: a command that has just started may not have set its handler yet, and would die
  of the signal's default action. While it neither catches, ignores nor blocks the signal (for a
  restart: SIGTERM) and has run for less than the grace, the signal waits; one is sent as soon as it
  does, or once the grace is over, with a warning that the command does not handle it. Changes
  meanwhile are written as usual. Signals forwarded from outside are never held.
- ``--stop-timeout``: a command that has not exited this long after it was asked to (by a restart, or
  a SIGTERM, SIGINT or SIGQUIT forwarded to it) gets SIGKILL.

When the command exits by itself, the dispenser exits with its status (128+N for a signal N); an exit
it was asked for by a restart is not an end.
"""

from __future__ import annotations

import logging
import signal
import time

from . import dispositions
from .child import Child
from .metrics import Metrics
from .signals import STOPPING

POLL_SECONDS = 0.01  # how often a held signal looks again whether the command can take it

log = logging.getLogger(__name__)


class Supervisor:
    def __init__(
        self,
        argv: list[str],
        env: dict[str, str],
        tell: signal.Signals | None,
        restart: bool,
        stop_timeout: float,
        metrics: Metrics,
        start_grace: float = 10.0,
    ) -> None:
        self.child = Child(argv, env)
        self.name = argv[0]
        self.tell = tell
        self.restart = restart
        self.stop_timeout = stop_timeout
        self.metrics = metrics
        self.start_grace = start_grace
        self._started_at = 0.0  # time.monotonic() when the command (re)started
        self._held: float | None = None  # since when a --signal waits for the command to take it
        self._warned = False  # said, for this start, that the command does not handle the signal
        if not dispositions.available():
            log.debug("no /proc/<pid>/status here: the command is signalled at once, set up or not")
        self._restart_wanted = False  # a swap happened since the command started (--restart)
        self._restarting = False  # asked to exit, to be started again
        self._stopping = False  # asked to exit for good: we are stopping
        self._kill_at: float | None = None  # time.monotonic() when it gets SIGKILL if still running

    @property
    def running(self) -> bool:
        return self.child.pid is not None

    def start(self) -> None:
        """Start the command on the files as they are now (main thread only; under the dispenser's
        lock, so that no swap comes between)."""
        self._restart_wanted = False
        self._started_at, self._warned = time.monotonic(), False
        self.child.start()
        log.info("started %s (pid %s)", self.name, self.child.pid)

    def changed(self) -> None:
        """A new generation went live: tell the command, or have it restarted."""
        if not self.running:
            return
        if self.restart:
            self._restart_wanted = True
        elif self.tell is not None:
            if self._held is None:
                self._held = time.monotonic()
            self._tell_when_ready()

    def _tell_when_ready(self) -> None:
        """Send the held ``--signal`` if the command can take it, or once the grace is over."""
        held = self._held
        if held is None or not self.running or self.tell is None or not self._may_send(self.tell):
            return
        self._held = None
        self.child.signal(self.tell)
        self.metrics.signals.inc()
        waited = time.monotonic() - held
        if waited < POLL_SECONDS:
            log.debug("sent %s to the child", self.tell.name)
        else:
            log.info("sent %s to %s, held %.2f s until it could take it", self.tell.name, self.name, waited)

    def _may_send(self, sig: signal.Signals, fatal_is_meant: bool = False) -> bool:
        """Whether ``sig`` may go to the command now: it takes it, or its start grace is over (or the
        system does not show what it takes). ``fatal_is_meant``: a stop, which needs no warning."""
        if self.child.takes(sig) is not False:
            return True
        if time.monotonic() - self._started_at < self.start_grace:
            return False
        if not self._warned and not fatal_is_meant:
            log.warning(
                "%s (pid %s) does not handle %s %g s after it started, and will likely be killed by "
                "it; sending it anyway",
                self.name,
                self.child.pid,
                sig.name,
                self.start_grace,
            )
        self._warned = True
        return True

    def forward(self, signum: int) -> bool:
        """Forward a signal we received (from its handler); whether there was a command to take it."""
        if not self.running:
            return False
        self.child.signal(signum)
        if signum in STOPPING:
            self._stopping = True
            self._kill_at = time.monotonic() + self.stop_timeout
        return True

    def tick(self) -> None:
        """Begin a restart that a swap asked for, and kill a command that outlived its stop timeout."""
        self._tell_when_ready()
        now = time.monotonic()
        if self._restart_due() and self._may_send(signal.SIGTERM, fatal_is_meant=True):
            self._restart_wanted, self._restarting = False, True
            self._kill_at = now + self.stop_timeout
            log.info("the files changed: stopping %s (pid %s) to start it again", self.name, self.child.pid)
            self.child.signal(signal.SIGTERM)
        if self._kill_at is not None and now >= self._kill_at and self.running:
            log.warning(
                "%s did not exit %g s after it was asked to; killing it", self.name, self.stop_timeout
            )
            self.child.signal(signal.SIGKILL)
            self._kill_at = None

    def wait_time(self) -> float | None:
        """Seconds until ``tick`` has something to do, if anything."""
        if (self._held is not None and self.running) or self._restart_due():
            return POLL_SECONDS
        return None if self._kill_at is None else max(0.0, self._kill_at - time.monotonic())

    def _restart_due(self) -> bool:
        return self._restart_wanted and self.running and not (self._restarting or self._stopping)

    def reaped(self) -> int | None:
        """Processes exited: the exit status to end with, if the command ended by itself (or for a
        stop); None if it still runs, or was started again after a restart."""
        status = self.child.reap()
        if status is None:
            return None
        self._kill_at = None
        if self._restarting and not self._stopping:
            self._restarting = False
            self.metrics.restarts.inc()
            self.start()
            return None
        log.info("the child exited with status %s", status)
        return status
