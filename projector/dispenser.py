"""The loop that ties it together: etcd batches -> key table -> generation on disk -> the command told.

Two threads share the work and take turns, under one lock. The source thread delivers batches; once the
command runs, it applies each one right away (a watch response, so a catch-up run becomes one generation
and one signal), tells the command and prepares the next generation. Handing the batch to the main
thread instead would cost a thread switch on every change, the biggest part of our latency after etcd's
own delivery. The main thread takes the signals we receive and the note that a child process exited,
applies batches until the command runs (and those that ``--wait`` held back), starts and restarts the
command, retries failed writes, and tidies up when no change came for a while. Signal handlers take no
lock: they forward a signal or queue an event.

The run: the first projection; then, with ``--require``, more projections until every required path
is there; then the command starts (systemd hears READY=1), and changes keep coming until the command
exits or we are told to stop. Each change is one ``Projection.apply`` (projection.py); assembly.py
makes the parts.

Every thread of a run, what it owns, and what crosses between them:

- **main** (here): the signals (inbox.py), the command's life (supervisor.py), the first projection
  and ``--require``, ``--wait``'s held batches, retries of failed writes, tidying when idle. Takes the
  lock for all of it but the signal handlers, which forward or queue only.
- **etcd-source** (source.py): the connection and the watch; under the lock it appends each batch to
  ``pending`` and, once ``direct`` is set, applies it, tells the command and prepares the next
  generation itself. An exception there is put in ``failure`` for the main thread to raise.
- **etcd-freshness** (source.py ``_confirm``): the freshness check on the live connection. Reads
  ``Source.live`` and ``Source.revision``, and the ledger's ``settled`` without the lock (one
  attribute each); reports under the lock (``confirmed``); writes ``Source.fresh_revision`` and
  ends the watch (``Source.interrupt``) for a failed check.
- **the watch timer** (a ``threading.Timer`` per watch, source.py): cancels a watch that etcd has not
  created within its deadline.
- **etcd-gathering** (gathering.py, one per watch where the role may not read the range covering
  several prefixes): delivers a revision's batch whose progress answer never came (through a
  proxy: once it stayed quiet), under the gathering's lock, which the source thread takes for
  every response; it then applies the batch as the source thread would.
- **templates** (rendering.py, with ``--template``): watches the template files; an edit is delivered
  like a batch (``receive``), so it is applied under the lock as any change.
- **links** (writer/links.py): makes the top-level links of a change that brings many names while
  the files are written, joined before the swap; touches only those links.
- **metrics** (exposition.py, with ``--metrics-address``): the HTTP server; reads the metrics and the
  heartbeat, writes nothing of ours.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from types import FrameType

from . import memory, signals
from .batches import Batch, Confirmation, Position
from .child import reap_all
from .inbox import ChildEvent, Inbox, Received
from .metrics import HEARTBEAT_SECONDS, Metrics
from .notify import Notifier
from .pacing import Quiet, Retry
from .projection import Outcome, Projection
from .rendering import watch_sources
from .settings import Options
from .source import Source
from .supervisor import Supervisor

GARBAGE_TICK = 0.2  # how long nothing must happen before stale generations are collected
LOCK_SLICE = 0.05  # seconds the main thread waits for the lock before it lets signal handlers run

log = logging.getLogger(__name__)


class Dispenser:
    """The run and its turns: the loop, the lock, and what each thread hands the other."""

    def __init__(
        self,
        options: Options,
        projection: Projection,
        source: Source,
        supervisor: Supervisor | None,
        metrics: Metrics,
        notifier: Notifier,
    ) -> None:
        self.options = options
        self.projection = projection
        self.source = source
        self.supervisor = supervisor
        self.metrics = metrics
        self.notifier = notifier
        self.writer = projection.writer
        self.events = Inbox()
        self.quiet = Quiet(*options.wait) if options.wait else None
        self.retry = Retry()
        self.lock = threading.Lock()
        self.pending: list[Batch] = []  # delivered, not yet applied
        self.direct = False  # whether the source thread applies what it delivers (once the command runs)
        self.changed_at = 0.0  # time.monotonic() of the last change applied
        self.failure: Exception | None = None  # raised by a change on the source thread
        self.stopping = threading.Event()  # the run is over: for the templates' thread

    # -- the run -------------------------------------------------------------------------------------------

    def run(self) -> int:
        """Project, start the command, keep projecting; the exit status to end with."""
        memory.keep_large_blocks_apart()
        self.events.listen(self._on_signal)
        self.writer.open()
        threading.Thread(target=self.source.run, args=(self,), name="etcd-source", daemon=True).start()
        if self.projection.templates.sources:
            watching = (self.projection.templates.sources, self.receive, self.stopping)
            threading.Thread(target=watch_sources, args=watching, name="templates", daemon=True).start()
        try:
            status = self._first_projection()
            if status is None:
                status = self._requirements()
            if status is not None:
                return status
            self.metrics.ready = True
            if self.options.once:
                self.writer.collect_garbage(everything=True)
                return 0
            with patiently(self.lock):
                if self.supervisor is not None:
                    self.supervisor.start()
                self.direct = True
                memory.give_back()  # (once the command is on its way: it waits for nothing here)
                self.writer.prepare()
            self.notifier.send("READY=1", self.projection.status())
            return self._loop()
        finally:
            self.notifier.send("STOPPING=1")
            self.stopping.set()
            with patiently(self.lock):
                self.direct = False
                self.source.stop()
                self.writer.close()

    def _first_projection(self) -> int | None:
        """Wait until etcd's state is on disk; an exit status if we are told to stop first."""
        while True:
            status, outcome = self._step()
            if status is not None:
                return status
            if outcome is Outcome.UNCHANGED:
                self.projection.on_change()  # files already matched etcd: still, the first projection is live
            if outcome in (Outcome.SWAPPED, Outcome.UNCHANGED):
                return None

    def _requirements(self) -> int | None:
        """Keep projecting until every ``--require`` path is there; an exit status if told to stop."""
        while not self.projection.required_there():
            status, _outcome = self._step()
            if status is not None:
                return status
        return None

    def _loop(self) -> int:
        while True:
            status, _outcome = self._step()
            if status is not None:
                return status

    def _step(self) -> tuple[int | None, Outcome | None]:
        """Take every waiting event: (exit status or None, outcome of ``_change`` or None if none ran)."""
        events = self.events.take(self._wait_time())
        self.metrics.beat()
        with patiently(self.lock):
            if self.failure is not None:
                raise self.failure
            for event in events:
                status = self._answer(event)
                if status is not None:
                    return status, None
            if self.supervisor is not None:
                self.supervisor.tick()
            if self._due():
                return None, self._change()
            if self.direct and not events and time.monotonic() - self.changed_at >= GARBAGE_TICK:
                self._tidy()
        return None, None

    # -- the source thread's side --------------------------------------------------------------------------

    def receive(self, batch: Batch) -> None:
        """The source thread's delivery: applied here once the command runs, else by the main thread
        (and by it too when ``--wait`` holds changes back)."""
        with self.lock:
            self.pending.append(batch)
            if self.direct and self.quiet is not None:
                self.quiet.arrived()
            elif self.direct:
                try:
                    self._change()
                except Exception as exc:
                    # A bug, not an etcd failure: end the run from the main thread, as it would there.
                    self.failure, self.direct = exc, False
        self.events.wake()  # the main thread's next wait depends on what happened (a retry, garbage)

    def settled(self) -> Position | None:
        """What the files hold, for the freshness check (read without the lock: one attribute)."""
        return self.projection.settled()

    def confirmed(self, confirmation: Confirmation) -> None:
        with self.lock:
            self.projection.confirmed(confirmation)

    # -- changes -------------------------------------------------------------------------------------------

    def _due(self) -> bool:
        """Whether pending batches (or a failed write) are to be written now."""
        if self.retry.due():
            return True
        if not self.pending:
            return False
        return self.quiet is None or not self.direct or self.quiet.remaining() == 0

    def _change(self) -> Outcome:
        """Apply the pending batches; after a swap, tell the command first, then log, run --on-change
        and prepare the next generation."""
        if self.quiet is not None:
            self.quiet.taken()
        batches, self.pending = self.pending, []
        applied = self.projection.apply(batches)
        outcome = applied.outcome
        self.changed_at = time.monotonic()
        if outcome is Outcome.FAILED:
            self._write_failed(applied.why)
        elif outcome in (Outcome.HELD, Outcome.UNRENDERED):  # judged again with the next change
            self.metrics.errors.labels("guard" if outcome is Outcome.HELD else "template").inc()
            log.error("%s", applied.why)
            self.retry.succeeded()
        elif outcome is not Outcome.REJECTED and self.retry.failing:
            log.warning("writing the target works again")
            self.retry.succeeded()
        if outcome is Outcome.SWAPPED:
            if self.supervisor is not None:
                self.supervisor.changed()
            status = self.projection.status()
            log.info(status.removeprefix("STATUS="))
            self.projection.on_change()
            self.notifier.send(status)
            if self.direct:  # (before the command runs, starting it comes first)
                self.writer.prepare()  # for the next change, now that this one is told
        return outcome

    def _write_failed(self, exc: str | None) -> None:
        self.metrics.errors.labels("write").inc()
        if not self.retry.failing:
            log.error("cannot write the target, keeping the last good files: %s", exc)
        else:
            log.debug("writing the target still fails: %s", exc)
        self.retry.failed()

    def _tidy(self) -> None:
        """When no change came for a while: remove stale generations and make the next one ready.
        Removing a 10,000-file generation takes about as long as writing one: done when nothing waits,
        so that it never delays a change (a busy writer reuses instead)."""
        if not self.retry.failing:
            self.writer.prepare()
        self.writer.collect_garbage()

    def _wait_time(self) -> float | None:
        waits = [self.retry.remaining()]
        if self.pending and self.quiet is not None:
            waits.append(self.quiet.remaining())
        if self.supervisor is not None:
            waits.append(self.supervisor.wait_time())
        if self.writer.has_garbage:
            waits.append(GARBAGE_TICK)
        if self.options.metrics_address:
            waits.append(HEARTBEAT_SECONDS)
        return min((wait for wait in waits if wait is not None), default=None)

    # -- signals and exits ---------------------------------------------------------------------------------

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        # Forward at once, from the handler, so that a long write does not delay the command's signal.
        if self.supervisor is None or not self.supervisor.forward(signum):
            self.events.put(Received(signum))

    def _answer(self, event: Received | ChildEvent) -> int | None:
        if isinstance(event, ChildEvent):
            if self.supervisor is None:
                reap_all()  # as PID 1 without a command we still collect orphans
                return None
            return self.supervisor.reaped()
        return signals.received(event.signum, command=self.supervisor is not None)


@contextlib.contextmanager
def patiently(lock: threading.Lock) -> Iterator[None]:
    """The lock, for the main thread. A signal that another thread took does not end a wait for a lock,
    and its handler runs only once the main thread runs again: wait in slices, so that a long change on
    the source thread never holds up forwarding a signal to the command."""
    while not lock.acquire(timeout=LOCK_SLICE):
        pass
    try:
        yield
    finally:
        lock.release()
