"""etcd as a stream of batches: one snapshot, then one batch per watch response, forever.

This module and the ones it uses (:mod:`.connection`, :mod:`.watchcall`, :mod:`.freshness`) are the only
code that talks to etcd. :class:`Source` runs in its own thread and hands each :class:`Batch` to its
receiver (the dispenser):

- a *snapshot* batch holds every key under the prefixes at one revision R, read in pages pinned to R;
- a *change* batch holds the events under the prefixes of one watch response. etcd never splits a
  revision across one watcher's responses, so a batch is one transaction, or a catch-up run of whole
  transactions. Several prefixes are watched by one watcher over the range that covers them all (from
  the first prefix to the end of the last), its events outside every prefix dropped: a transaction
  across prefixes is then one response like any other, however far behind the watcher falls.
  Separate watchers would each fall behind on their own (etcd moves a watcher whose stream is full to
  a catch-up group, one by one), and no answer of etcd before 3.4.24 and 3.5.8 says when all of them
  have sent a revision. Only where the role may not read that covering range does each prefix get a
  watcher of its own, their responses gathered (gathering.py), with a warning.

Trouble never ends the stream. A failure is logged once per outage, retried with capped jittered
backoff against the next endpoint, and the watch resumes from the last delivered revision + 1. A
compacted revision, or a snapshot cut short by compaction, starts a new snapshot; the receiver diffs
it against what it has, so keys deleted meanwhile go away too. A member that loses its leader ends our
watch (we require one), and the freshness thread (``_confirm``) ends a watch that the check
(:class:`~.freshness.Freshness`) finds stuck, without an answer, or refused for a lost permission. A
watch that is stuck, or not created in time, while etcd answered is followed by a new snapshot, as
Kubernetes' reflector lists again: etcd's grpc-proxy can wedge every watch while its reads still work
(etcd #19296: a void token, then a restart of etcd), and the files then keep up by reading.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Any, Protocol

import grpc
from pyetcd import etcdrpc

from .batches import Batch, Confirmation, Position
from .connection import CALL_TIMEOUT, Connection, each_readable, prefix_end, read_prefixes
from .freshness import Freshness, Stuck
from .gathering import Gathering
from .metrics import Metrics
from .outage import Outage
from .pacing import Backoff
from .settings import EtcdConfig
from .watchcall import Stream, WatchCall, open_watch

BACKOFF_FIRST = 0.1
BACKOFF_MAX = 5.0

log = logging.getLogger(__name__)


class Receiver(Protocol):
    """Where batches go (the dispenser). ``settled`` is called from another thread, without a lock."""

    def receive(self, batch: Batch) -> None: ...

    def settled(self) -> Position | None: ...

    def confirmed(self, confirmation: Confirmation) -> None: ...


class Uncovered(PermissionError):
    """The role may read each prefix but not the range that covers them: watch them one by one."""


class Compacted(Exception):
    """The revision we need is gone from etcd's history: take a new snapshot."""


class Unanswered(ConnectionError):
    """etcd, or a proxy, did not create the watch in time."""


class Source:
    """Reads the prefix from etcd and delivers batches to the receiver given to :meth:`run`, until
    :meth:`stop`."""

    receiver: Receiver

    def __init__(
        self,
        config: EtcdConfig,
        prefixes: tuple[bytes, ...],
        metrics: Metrics,
        confirm_interval: float,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.prefixes = prefixes
        self._named = ", ".join(prefix.decode(errors="replace") for prefix in prefixes)  # for logs
        self.revision: int | None = None  # the last revision delivered
        self.deliveries = 0  # batches delivered so far
        self.stopping = threading.Event()
        self.live: Connection | None = None  # the connection of the live watch
        self.fresh_revision = 0  # a revision up to which nothing under the prefix changed unseen
        self._freshness = Freshness(prefixes, confirm_interval)
        self._backoff = Backoff(BACKOFF_FIRST, BACKOFF_MAX)
        self._stream: WatchCall | None = None
        self._interruption: Exception | None = None
        self._attempt = 0
        self._endpoint = ""  # the one in use, for logs
        self._outage = Outage(self._named, metrics)
        self._warned_uncovered = False

    def run(self, receiver: Receiver) -> None:
        self.receiver = receiver
        threading.Thread(target=self._confirm, name="etcd-freshness", daemon=True).start()
        while not self.stopping.is_set():
            connection = None
            try:
                connection = self._connect()
                if self.revision is None:
                    self._snapshot(connection)
                try:
                    self._watch(connection, [self._covering()])
                except Uncovered:
                    self._snapshot(connection)  # (separate watchers start at one revision: gathering.py)
                    self._watch(connection, [(prefix, prefix_end(prefix)) for prefix in self.prefixes])
            except Compacted as exc:
                log.info("etcd compacted the history we need (%s); reading the prefix anew", exc)
                self.revision = None
            except Exception as exc:
                self._failed(exc)
                if isinstance(exc, Stuck | Unanswered):  # reads may work where watches do not: read anew
                    self.revision = None
                self.stopping.wait(self._backoff.next() * random.uniform(0.5, 1.0))
            finally:
                self.live = None
                if connection is not None:
                    connection.close()

    def stop(self) -> None:
        self.stopping.set()
        stream = self._stream
        if stream is not None:
            stream.cancel()

    def _confirm(self) -> None:
        """The freshness thread: every interval, check the live watch's connection, and act on it."""
        while not self.stopping.wait(self._freshness.interval):
            connection = self.live
            if connection is None:
                continue
            verdict = self._freshness.check(connection, self.receiver.settled(), self.revision)
            if isinstance(verdict, Exception):
                self.interrupt(connection, verdict)
                continue
            if verdict.current:
                self.fresh_revision = max(self.fresh_revision, verdict.revision)
            self.receiver.confirmed(verdict)

    def interrupt(self, connection: Connection, exc: Exception) -> None:
        """End the watch on ``connection``, if it is still the live one, as failed for ``exc``."""
        if self.live is connection:
            self._cancel(exc)

    def _cancel(self, exc: Exception) -> None:
        stream = self._stream
        if stream is not None:
            self._interruption = exc
            stream.cancel()

    # -- connecting ----------------------------------------------------------------------------------------

    def _connect(self) -> Connection:
        """A connection to the next endpoint in turn."""
        endpoint = self.config.endpoints[self._attempt % len(self.config.endpoints)]
        self._attempt += 1
        self._endpoint = self.config.url(endpoint)
        return Connection(self.config, endpoint)

    def _failed(self, exc: Exception) -> None:
        self._outage.failed(exc, self._endpoint)

    def _recovered(self, connection: Connection) -> None:
        """The watch is live: a later outage starts again from the shortest backoff."""
        self.live = connection
        self._backoff.reset()
        self._outage.over(self._endpoint, self.revision)

    # -- reading -------------------------------------------------------------------------------------------

    def _snapshot(self, connection: Connection) -> None:
        """Every key under the prefixes at one revision."""
        read_at = time.time()
        try:
            revision, items = read_prefixes(connection, self.prefixes)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.OUT_OF_RANGE:
                raise Compacted("while reading the prefix") from None
            raise
        self.revision = revision
        self._deliver(Batch(revision, items, snapshot=True))
        # A linearizable read: the files are current as of its start, once they hold it.
        self.receiver.confirmed(Confirmation(revision, read_at, current=False))

    def _covering(self) -> tuple[bytes, bytes]:
        """The range from the first prefix to the end of the last: one watcher for every prefix."""
        return min(self.prefixes), max(prefix_end(prefix) for prefix in self.prefixes)

    def _watch(self, connection: Connection, ranges: list[tuple[bytes, bytes]]) -> None:
        """Deliver a batch per watch response, from the last delivered revision + 1, until stopped: one
        watcher per range on one stream."""
        assert self.revision is not None
        start = max(self.revision, self.fresh_revision) + 1
        requests = [
            etcdrpc.WatchRequest(
                create_request=etcdrpc.WatchCreateRequest(
                    key=key, range_end=end, start_revision=start, progress_notify=True
                )
            )
            for key, end in ranges
        ]
        self._interruption = None
        gathering = None
        if len(requests) == 1:
            stream: WatchCall = open_watch(connection.channel, requests[0], connection.metadata)
            take = self._deliver_events
        else:
            several = Stream(connection.channel, requests, connection.metadata)
            stream, gathering = several, Gathering(self._deliver, several.request_progress)
            take = gathering.take
        self._stream = stream
        # The watch has no deadline of its own; its creation must not wait forever either (a proxy may
        # hang on a member that hangs, while it answers keepalive pings itself).
        unanswered = Unanswered(f"etcd did not create the watch within {CALL_TIMEOUT:g} s")
        deadline = threading.Timer(CALL_TIMEOUT, self._cancel, (unanswered,))
        deadline.start()
        try:
            if self.stopping.is_set():
                return
            created = 0
            for response in stream:
                if response.compact_revision:
                    raise Compacted(f"compacted up to revision {response.compact_revision}")
                if response.canceled:
                    covering = len(ranges) < len(self.prefixes)
                    raise self._refused(connection, response.cancel_reason, covering)
                if response.created:  # (its revision is etcd's head, not what came through)
                    created += 1
                    if created == len(requests):
                        deadline.cancel()
                        self._recovered(connection)
                    continue
                take(response)
        except grpc.RpcError:
            if self.stopping.is_set():
                return
            if self._interruption is not None:
                raise self._interruption from None
            raise
        finally:
            deadline.cancel()
            self._stream = None
            if gathering is not None:
                gathering.close()
        if not self.stopping.is_set():
            raise ConnectionError("etcd closed the watch stream")

    def _refused(self, connection: Connection, text: str, covering: bool) -> Exception:
        """Why etcd cancelled the watch; a covering range refused where each prefix may be read is
        :class:`Uncovered`."""
        cancelled = _cancelled(text)
        refused = covering and isinstance(cancelled, PermissionError)
        if not (refused and each_readable(connection, self.prefixes)):
            return cancelled
        if not self._warned_uncovered:
            self._warned_uncovered = True
            start, end = self._covering()
            log.warning(
                "the role may read each prefix but not the range that covers them (%r to %r): each prefix"
                " is watched on its own, and a transaction across prefixes can go live in parts while"
                ' etcd\'s stream is behind (README, "Several prefixes")',
                start.decode(errors="replace"),
                end.decode(errors="replace"),
            )
        return Uncovered(text)

    def _deliver_events(self, response: Any) -> None:
        changes: dict[bytes, bytes | None] = {}
        revision = 0
        for event in response.events:
            kv = event.kv
            revision = max(revision, kv.mod_revision)
            if kv.key.startswith(self.prefixes):  # (the covering range holds keys of no prefix)
                changes[kv.key] = None if event.type == event.DELETE else kv.value
        if not changes:
            # A progress notification, or changes outside every prefix: nothing under them changed
            # up to this revision.
            self.fresh_revision = max(self.fresh_revision, revision or response.header.revision)
            return
        self.revision = revision
        self._deliver(Batch(revision, changes))

    def _deliver(self, batch: Batch) -> None:
        self.deliveries += 1
        self.receiver.receive(batch)


def _cancelled(text: str) -> Exception:
    """etcd cancelled the watch: a refusal of our role is a permission error like any other."""
    if "permission denied" in text:
        return PermissionError(f"watch refused by etcd: {text}")
    return ConnectionError(f"watch cancelled by etcd: {text or 'no reason'}")
