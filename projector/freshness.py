"""Whether the files are current, asked of etcd at a steady interval, and what to do when they are not.

A quiet watch says nothing: the prefix may be idle, or the member behind the watch may be cut off from
its cluster, a proxy may have lost its way, or our role may have been revoked (etcd checks permissions
when a watch is created, not while it runs). So every ``--confirm-interval`` (10 s by default) one
request goes through the live watch's own connection: a range over the prefix, keys only, newest
modification first, one key returned. It is linearizable and requires a leader, so a member cut off
from its cluster cannot answer from its stale state; it needs read permission on the prefix; and its
answer, at etcd's revision R, gives the number of keys under the prefix and the newest modification
among them.

- **Current**: no key was modified after the revision on disk and there are as many keys as on disk
  (then none was deleted either). The files are confirmed current as of the moment the request was
  sent; ``dispenser_last_sync_timestamp_seconds`` takes that moment.
- **Behind**: once the files hold R, they are confirmed as of the same moment.
- **Stuck**: a modification that etcd showed at the previous check has still not come through the
  watch. The watch is ended and resumed (elsewhere, with several endpoints) from the last revision it
  delivered + 1.
- **No answer** (no leader, no permission, a timeout): the watch is ended as a failure of etcd; the
  source logs it and retries.

etcd's watch progress requests would answer "is the watch caught up" more cheaply, but etcd's
grpc-proxy drops them ("not supported request type by gRPC proxy"), and they say nothing about
permission. etcd reads every key under the prefix for this range: about 0.5 ms of its time at 100
keys, 20 ms at 10,000 keys of 2 KiB (README, "Freshness").
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pyetcd import etcdrpc

from .connection import Connection, is_expired_token, is_permission, prefix_end, reason
from .metrics import Metrics

if TYPE_CHECKING:
    from .source import Source

CHECK_TIMEOUT = 5.0


@dataclass(frozen=True)
class Position:
    """What the files on disk hold: etcd's state at ``revision``, ``keys`` keys under the prefix."""

    revision: int
    keys: int


@dataclass(frozen=True)
class Confirmation:
    """etcd's state at ``revision`` was read at ``at`` (Unix time); ``current``: the files hold it."""

    revision: int
    at: float
    current: bool


class Stuck(ConnectionError):
    """The watch is not delivering what etcd shows changed under the prefix."""


class Freshness:
    """The periodic check, run on a thread of its own; it acts through its :class:`Source`."""

    def __init__(self, source: Source, interval: float) -> None:
        self.source = source
        self.interval = interval
        self._undelivered = 0  # a modification the watch had not delivered at the last check

    def run(self) -> None:
        while not self.source.stopping.wait(self.interval):
            connection = self.source.live
            if connection is not None:
                self.check(connection)

    def check(self, connection: Connection) -> None:
        settled = self.source.receiver.settled()
        at = time.time()
        try:
            response = self._ask(connection)
        except Exception as exc:
            self._undelivered = 0
            failure = (
                exc
                if is_permission(exc)
                else ConnectionError(f"no answer to a freshness check: {reason(exc)}")
            )
            self.source.interrupt(connection, failure)
            return
        revision, keys = response.header.revision, response.count
        newest = response.kvs[0].mod_revision if response.kvs else 0
        current = settled is not None and newest <= settled.revision and keys == settled.keys
        if current:
            self.source.fresh_revision = max(self.source.fresh_revision, revision)
        delivered = self.source.revision
        if delivered is not None and delivered < self._undelivered:
            late, self._undelivered = self._undelivered, 0
            stuck = Stuck(f"revision {late} had still not come through the watch {self.interval:g} s later")
            self.source.interrupt(connection, stuck)
            return
        self._undelivered = newest if delivered is not None and newest > delivered else 0
        self.source.receiver.confirmed(Confirmation(revision, at, current))

    def _ask(self, connection: Connection) -> Any:
        request = etcdrpc.RangeRequest(
            key=self.source.prefix,
            range_end=prefix_end(self.source.prefix),
            keys_only=True,
            limit=1,
            sort_order=etcdrpc.RangeRequest.DESCEND,
            sort_target=etcdrpc.RangeRequest.MOD,
        )
        try:
            return connection.kv.Range(request, CHECK_TIMEOUT, metadata=connection.metadata)
        except Exception as exc:
            if not is_expired_token(exc):
                raise
        connection.reauthenticate()  # tokens expire; the watch itself does not need a new one
        return connection.kv.Range(request, CHECK_TIMEOUT, metadata=connection.metadata)


class Ledger:
    """The receiving side of the check: what the files hold, and a reading of etcd waiting for them."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.settled: Position | None = None  # what the files hold; None while they lag the key table
        self._waiting: Confirmation | None = None

    def written(self, position: Position) -> None:
        self.settled = position
        self._confirm(position.revision)

    def lagging(self) -> None:
        """The files may not hold what was taken in (a write is under way, failed or was rejected)."""
        self.settled = None

    def confirmed(self, confirmation: Confirmation) -> None:
        """etcd was read at ``confirmation.at``: the files are current as of then once they hold it."""
        self._waiting = confirmation
        if confirmation.current:
            self._confirm(confirmation.revision)
        elif self.settled is not None:
            self._confirm(self.settled.revision)

    def _confirm(self, revision: int) -> None:
        waiting = self._waiting
        if waiting is not None and revision >= waiting.revision:
            self.metrics.last_sync.set(waiting.at)
            self._waiting = None
