"""The loop that ties it together: etcd batches -> key table -> generation on disk -> one signal.

Two threads share the work and take turns, under one lock. The source thread delivers batches; once the
child runs, it applies each one right away (a watch response, so a catch-up run becomes one generation
and one signal), signals the child and prepares the next generation. Handing the batch to the main thread
instead would cost a thread switch on every change, the biggest part of our latency after etcd's own
delivery. The main thread takes signals we receive and the note that a child process exited, applies
batches until the child runs, retries failed writes, and tidies up when no change came for a while.
Signal handlers take no lock: they forward a signal or queue an event.

What the dispenser knows of the keys lives in the key table (keytable.py).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

from .child import Child, reap_all
from .freshness import Confirmation, Position
from .hooks import Hooks
from .inbox import ChildEvent, Inbox, Received
from .keytable import KeyTable
from .metrics import HEARTBEAT_SECONDS, Metrics
from .settings import EtcdConfig, Options, child_environment
from .source import Batch, Source
from .writer import Rejected, WriteError, Writer

FORWARDED = (
    signal.SIGHUP,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGTERM,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGWINCH,
    signal.SIGABRT,
)
STOPPING = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGQUIT})
RETRY_FIRST = 0.5
RETRY_MAX = 30.0
GARBAGE_TICK = 0.2  # how long nothing must happen before stale generations are collected
LOCK_SLICE = 0.05  # seconds the main thread waits for the lock before it lets signal handlers run

log = logging.getLogger(__name__)


class Dispenser:
    def __init__(self, options: Options, etcd: EtcdConfig, metrics: Metrics) -> None:
        self.options = options
        self.metrics = metrics
        self.events = Inbox()
        self.writer = Writer(options.target, options.ownership, fsync=options.fsync)
        environment = child_environment()
        self.hooks = Hooks(options.check, options.on_change, environment, metrics)
        self.child = Child(options.command, environment) if options.command else None
        self.source = Source(etcd, options.prefix, self, metrics, options.confirm_interval)
        self.lock = threading.Lock()
        self.pending: list[Batch] = []  # delivered, not yet applied
        self.direct = False  # whether the source thread applies what it delivers (once the child runs)
        self.changed_at = 0.0  # time.monotonic() of the last change applied
        self.failure: Exception | None = None  # raised by a change on the source thread
        self.keys = KeyTable(options.prefix)
        self._settled: Position | None = None  # what the files hold; None while they lag the table
        self.confirming: Confirmation | None = None  # etcd's state, until the files hold it
        self.retry_at: float | None = None
        self.retry_delay = RETRY_FIRST

    # -- the run -------------------------------------------------------------------------------------------

    def run(self) -> int:
        """Project, start the child, keep projecting; the exit status to end with."""
        self._install_signal_handlers()
        self.writer.open()
        threading.Thread(target=self.source.run, name="etcd-source", daemon=True).start()
        try:
            status = self._first_projection()
            if status is not None:
                return status
            self.metrics.ready = True
            if self.options.once:
                self.writer.collect_garbage(everything=True)
                return 0
            if self.child is not None:
                self.child.start()
                log.info("started %s (pid %s)", self.options.command[0], self.child.pid)
            return self._loop()
        finally:
            with self._locked():
                self.direct = False
                self.source.stop()
                self.writer.close()

    def _first_projection(self) -> int | None:
        """Wait until etcd's state is on disk; an exit status if we are told to stop first."""
        while True:
            status, written = self._step()
            if status is not None:
                return status
            if written is False:
                self._on_change()  # files already matched etcd: still, the first projection is live
            if written is not None:
                return None

    def _loop(self) -> int:
        with self._locked():
            self.direct = True
            self.writer.prepare()
        while True:
            status, _written = self._step()
            if status is not None:
                return status

    def _step(self) -> tuple[int | None, bool | None]:
        """Take every waiting event: (exit status or None, outcome of ``_change`` or None if none ran)."""
        events = self.events.take(self._wait_time())
        self.metrics.beat()
        with self._locked():
            if self.failure is not None:
                raise self.failure
            for event in events:
                status = self._answer(event)
                if status is not None:
                    return status, None
            if self.pending or (self.retry_at is not None and time.monotonic() >= self.retry_at):
                return None, self._change()
            if self.direct and not events and time.monotonic() - self.changed_at >= GARBAGE_TICK:
                self._tidy()
        return None, None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """The lock, for the main thread. A signal that another thread took does not end a wait for a
        lock, and its handler runs only once the main thread runs again: wait in slices, so that a long
        change on the source thread never holds up forwarding a signal to the child."""
        while not self.lock.acquire(timeout=LOCK_SLICE):
            pass
        try:
            yield
        finally:
            self.lock.release()

    def receive(self, batch: Batch) -> None:
        """The source thread's delivery: applied here once the child runs, else by the main thread."""
        with self.lock:
            self.pending.append(batch)
            if self.direct:
                try:
                    self._change()
                except Exception as exc:
                    # A bug, not an etcd failure: end the run from the main thread, as it would there.
                    self.failure, self.direct = exc, False
        self.events.wake()  # the main thread's next wait depends on what happened (a retry, garbage)

    def settled(self) -> Position | None:
        """What the files hold, for the freshness check (read without the lock: one attribute)."""
        return self._settled

    def confirmed(self, confirmation: Confirmation) -> None:
        """etcd was read at ``confirmation.at``: the files are current as of then once they hold it."""
        with self.lock:
            self.confirming = confirmation
            if confirmation.current:
                self._confirm(confirmation.revision)
            elif self._settled is not None:
                self._confirm(self._settled.revision)

    def _confirm(self, revision: int) -> None:
        """The files hold ``revision``: confirm the reading of etcd waiting for that, if any."""
        waiting = self.confirming
        if waiting is not None and revision >= waiting.revision:
            self.metrics.last_sync.set(waiting.at)
            self.confirming = None

    def _change(self) -> bool | None:
        """Apply the pending batches; after a swap, signal the child first, then log, run --on-change
        and prepare the next generation."""
        swapped = self._apply()
        self.changed_at = time.monotonic()
        if swapped:
            self._signal_child()
            log.info(
                "revision %s: generation %s is live (%d files)",
                self.keys.revision,
                self.writer.generation,
                len(self.writer.files),
            )
            self._on_change()
            if self.direct:  # (before the child runs, starting it comes first)
                self.writer.prepare()  # for the next change, now that this one is told
        return swapped

    def _signal_child(self) -> None:
        if self.child is not None and self.child.pid is not None and self.options.signal is not None:
            self.child.signal(self.options.signal)
            self.metrics.signals.inc()
            log.debug("sent %s to the child", self.options.signal.name)

    def _tidy(self) -> None:
        """When no change came for a while: remove stale generations and make the next one ready.
        Removing a 10,000-file generation takes about as long as writing one: done when nothing waits,
        so that it never delays a change (a busy writer reuses instead)."""
        if self.retry_at is None:
            self.writer.prepare()
        self.writer.collect_garbage()

    def _wait_time(self) -> float | None:
        waits = []
        if self.retry_at is not None:
            waits.append(max(0.0, self.retry_at - time.monotonic()))
        if self.writer.has_garbage:
            waits.append(GARBAGE_TICK)
        if self.options.metrics_address:
            waits.append(HEARTBEAT_SECONDS)
        return min(waits, default=None)

    def _answer(self, event: Received | ChildEvent) -> int | None:
        if isinstance(event, ChildEvent):
            return self._reap()
        if event.signum in STOPPING:
            log.info("received %s; exiting", signal.Signals(event.signum).name)
            return 0 if self.child is None else 128 + event.signum
        return None

    def _reap(self) -> int | None:
        if self.child is None:
            reap_all()  # as PID 1 without a command we still collect orphans
            return None
        status = self.child.reap()
        if status is not None:
            log.info("the child exited with status %s", status)
        return status

    # -- signals -------------------------------------------------------------------------------------------

    def _install_signal_handlers(self) -> None:
        self.events.wake_on_signals()
        for sig in FORWARDED:
            signal.signal(sig, self._on_signal)
        signal.signal(signal.SIGCHLD, lambda _signum, _frame: self.events.put(ChildEvent()))

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        # Forward at once, from the handler, so that a long write does not delay the child's signal.
        if self.child is not None and self.child.pid is not None:
            self.child.signal(signum)
        else:
            self.events.put(Received(signum))

    # -- applying batches ----------------------------------------------------------------------------------

    def _apply(self) -> bool | None:
        """Bring the target to the state of the key table and the pending batches: True if a new
        generation went live, False if the target already matched, None if writing failed (retried)."""
        for batch in self.pending:
            self.keys.absorb(batch)
        self.pending = []
        wanted = self.keys.wanted(self.writer)
        self.metrics.rejected_keys.set(self.keys.refused)
        accept = self._check if self.options.check else None
        self._settled = None
        try:
            swapped = self.writer.apply(wanted, self.keys.value, accept)
        except WriteError as exc:
            self._write_failed(exc)
            return None
        except Rejected:
            return None  # values stay held; the next change is tried again
        if self.retry_at is not None:
            log.warning("writing the target works again")
            self.retry_at, self.retry_delay = None, RETRY_FIRST
        self.keys.written()
        self._settled = Position(self.keys.revision, len(self.keys.digests))
        self._confirm(self.keys.revision)
        self.metrics.applied_revision.set(self.keys.revision)
        if swapped:
            self.metrics.generations.inc()
        else:
            log.debug("revision %s: nothing changed on disk", self.keys.revision)
        return swapped

    def _write_failed(self, exc: WriteError) -> None:
        self.metrics.errors.labels("write").inc()
        if self.retry_at is None:
            log.error("cannot write the target, keeping the last good files: %s", exc)
        else:
            log.debug("writing the target still fails: %s", exc)
        self.retry_at = time.monotonic() + self.retry_delay
        self.retry_delay = min(self.retry_delay * 2, RETRY_MAX)

    def _check(self, candidate: Path) -> bool:
        return self.hooks.check(candidate, self.keys.revision)

    def _on_change(self) -> None:
        self.hooks.on_change(self.options.target / str(self.writer.generation), self.keys.revision)
