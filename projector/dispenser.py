"""The loop that ties it together: etcd batches -> key table -> generation on disk -> one signal.

Two threads share the work and take turns, under one lock. The source thread delivers batches; once the
child runs, it applies each one right away (a watch response, so a catch-up run becomes one generation
and one signal), signals the child and prepares the next generation. Handing the batch to the main thread
instead would cost a thread switch on every change, the biggest part of our latency after etcd's own
delivery. The main thread takes signals we receive and the note that a child process exited, applies
batches until the child runs, retries failed writes, and tidies up when no change came for a while.
Signal handlers take no lock: they forward a signal or queue an event.

Memory holds a digest per key, not values: a value is kept only while it is not on disk (changed since
the last successful write, or valid but refused because it conflicts with another key or a file the
operator keeps in the target), so that a failed write can be retried and a refused key projected once
its conflict goes away.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import select
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from .child import Child, reap_all, run_hook
from .freshness import Confirmation, Position
from .keys import PathTable, Plan, RefusedKey, printable
from .metrics import HEARTBEAT_SECONDS, Metrics
from .settings import EtcdConfig, Options, child_environment
from .source import Batch, Source
from .writer import Rejected, WriteError, Writer, digest

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
HOOK_TIMEOUT = 60.0  # seconds a --check or --on-change command may take
GARBAGE_TICK = 0.2  # how long nothing must happen before stale generations are collected
LOCK_SLICE = 0.05  # seconds the main thread waits for the lock before it lets signal handlers run

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Received:
    """A signal that the main loop has to decide about (no child to forward it to)."""

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

    def wake_on_signals(self) -> None:
        signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)

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


class Dispenser:
    def __init__(self, options: Options, etcd: EtcdConfig, metrics: Metrics) -> None:
        self.options = options
        self.metrics = metrics
        self.events = Inbox()
        self.writer = Writer(options.target, options.ownership, fsync=options.fsync)
        self.hook_environment = child_environment()
        self.child = Child(options.command, self.hook_environment) if options.command else None
        self.source = Source(etcd, options.prefix, self, metrics, options.confirm_interval)
        self.lock = threading.Lock()
        self.pending: list[Batch] = []  # delivered, not yet applied
        self.direct = False  # whether the source thread applies what it delivers (once the child runs)
        self.changed_at = 0.0  # time.monotonic() of the last change applied
        self.failure: Exception | None = None  # raised by a change on the source thread
        self.table = PathTable(options.prefix)
        self.digests: dict[bytes, bytes] = {}
        self.held: dict[bytes, bytes] = {}
        self.warned: dict[bytes, str] = {}
        self.plan: Plan | None = None  # None: keys came or went since it was made
        self.wanted: dict[str, bytes] = {}  # path -> digest, as the plan places the keys
        self.revision = 0
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
                self.revision,
                self.writer.generation,
                len(self.wanted),
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
        changed = self._absorb(self.pending)
        self.pending = []
        plan = self._plan()
        for key in changed & self.digests.keys():
            path = self.table.path(key)
            if isinstance(path, str) and plan.paths.get(path) == key:
                self.wanted[path] = self.digests[key]
        accept = self._check if self.options.check else None
        self._settled = None
        try:
            swapped = self.writer.apply(self.wanted, lambda path: self.held[plan.paths[path]], accept)
        except WriteError as exc:
            self._write_failed(exc)
            return None
        except Rejected:
            return None  # values stay held; the next change is tried again
        if self.retry_at is not None:
            log.warning("writing the target works again")
            self.retry_at, self.retry_delay = None, RETRY_FIRST
        self.held = {key: value for key, value in self.held.items() if self._kept_aside(key, plan)}
        self._settled = Position(self.revision, len(self.digests))
        self._confirm(self.revision)
        self.metrics.applied_revision.set(self.revision)
        if swapped:
            self.metrics.generations.inc()
        else:
            log.debug("revision %s: nothing changed on disk", self.revision)
        return swapped

    def _plan(self) -> Plan:
        """Which key goes where; decided anew only when keys come or go (a changed value moves
        nothing), which keeps a change from costing a pass over every key in Python."""
        if self.plan is None:
            self.plan = self.table.plan(self.digests, self.writer.is_foreign)
            self._report(self.plan.refused)
            self.metrics.rejected_keys.set(len(self.plan.refused))
            self._hold_displaced(self.plan)
            self.wanted = {path: self.digests[key] for path, key in self.plan.paths.items()}
        return self.plan

    def _absorb(self, batches: list[Batch]) -> set[bytes]:
        """Take the batches into the key table; the keys whose value changed."""
        changed: set[bytes] = set()
        for batch in batches:
            if batch.snapshot:
                for key in self.digests.keys() - batch.changes.keys():
                    self._forget(key)
            for key, value in batch.changes.items():
                if value is None:
                    self._forget(key)
                    continue
                if key not in self.digests:
                    self.plan = None
                self.digests[key] = digest(value)
                self.held[key] = value
                changed.add(key)
            self.revision = max(self.revision, batch.revision)
        return changed

    def _forget(self, key: bytes) -> None:
        if key in self.digests:
            self.plan = None
        self.digests.pop(key, None)
        self.held.pop(key, None)
        self.table.forget(key)

    def _report(self, refused: dict[bytes, str]) -> None:
        """One warning per refused key (again only if its reason changes); never its value."""
        for key, reason in refused.items():
            if self.warned.get(key) != reason:
                log.warning("refusing key %s: it %s", printable(key), reason)
        self.warned = refused

    def _hold_displaced(self, plan: Plan) -> None:
        """Keep the value of a key that is on disk now but refused from this change on."""
        files = self.writer.files
        for key in plan.refused:
            path = self.table.path(key)
            if key in self.held or isinstance(path, RefusedKey):
                continue
            if files.get(path) == self.digests[key]:
                self.held[key] = self.writer.read(path)

    def _kept_aside(self, key: bytes, plan: Plan) -> bool:
        """Whether a value must stay in memory: valid, but not on disk."""
        return key in plan.refused and not isinstance(self.table.path(key), RefusedKey)

    def _check(self, candidate: Path) -> bool:
        """--check: the candidate goes live only if the command succeeds on it."""
        assert self.options.check is not None
        env = {**self.hook_environment, "DISPENSER_CANDIDATE": str(candidate)}
        outcome = run_hook(self.options.check, env, HOOK_TIMEOUT)
        if outcome == 0:
            return True
        self.metrics.errors.labels("check").inc()
        log.error(
            "revision %s: --check rejected the new files (%s); the old ones stay",
            self.revision,
            _said(outcome),
        )
        return False

    def _on_change(self) -> None:
        """--on-change: told after each swap; its failure is logged and counted, never fatal."""
        if not self.options.on_change:
            return
        live = self.options.target / str(self.writer.generation)
        outcome = run_hook(
            self.options.on_change, {**self.hook_environment, "DISPENSER_GENERATION": str(live)}, HOOK_TIMEOUT
        )
        if outcome != 0:
            self.metrics.errors.labels("on_change").inc()
            log.warning("revision %s: --on-change failed (%s)", self.revision, _said(outcome))

    def _write_failed(self, exc: WriteError) -> None:
        self.metrics.errors.labels("write").inc()
        if self.retry_at is None:
            log.error("cannot write the target, keeping the last good files: %s", exc)
        else:
            log.debug("writing the target still fails: %s", exc)
        self.retry_at = time.monotonic() + self.retry_delay
        self.retry_delay = min(self.retry_delay * 2, RETRY_MAX)


def _said(outcome: int | str) -> str:
    return f"exit status {outcome}" if isinstance(outcome, int) else outcome
