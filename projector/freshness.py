"""Whether the files are current, asked of etcd at a steady interval, and what to do when they are not.

A quiet watch says nothing: the prefix may be idle, or the member behind the watch may be cut off from
its cluster, a proxy may have lost its way, or our role may have been revoked (etcd checks permissions
when a watch is created, not while it runs). So every ``--confirm-interval`` (10 s by default) the
check asks through the live watch's own connection, in two steps:

1. A read of one key, the prefix itself (with several prefixes, one each): linearizable, so it requires
   a leader and a member cut off from its cluster cannot answer from its stale state; it needs read
   permission on the prefix; and its header carries etcd's revision. If etcd's revision (and cluster)
   are those of the last full reading, nothing at all was written since: that reading still holds.
2. Otherwise the full reading: a range over the prefix, keys only, newest modification first, one key
   returned (with several prefixes, one range each, every one after the first pinned to the first
   one's revision). Its answer, at etcd's revision R, gives the number of keys under the prefix and the
   newest modification among them.

- **Current**: no key was modified after the revision on disk and there are as many keys as on disk
  (then none was deleted either). The files are confirmed current as of the moment the request was
  sent; ``dispenser_last_sync_timestamp_seconds`` takes that moment.
- **Behind**: once the files hold R, they are confirmed as of the same moment.
- **Stuck**: a modification that etcd showed at the previous check has still not come through the
  watch. The watch is ended; the source reads the prefix anew (elsewhere, with several endpoints)
  and watches from there, since a wedged proxy may hang every watch while its reads work.
- **No answer** (no leader, no permission, a timeout): the watch is ended as a failure of etcd; the
  source logs it and retries.

Step 1 costs etcd the same whatever the prefix holds (a third of a millisecond of its CPU); step 2
visits every key under the prefix (0.6 ms at 100 keys, 17 ms at 10,000 keys of 2 KiB: docs/benchmarks.md
sections 8 and 12), and is made only after a write somewhere in etcd, at most once per interval. No
cheaper request says "changed under the prefix since R": etcd's watch progress requests would, but
etcd's grpc-proxy drops them ("not supported request type by gRPC proxy") and they say nothing about
permission; ``count_only`` and ``min_mod_revision`` still visit every key.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

from pyetcd import etcdrpc

from .batches import Confirmation, Position
from .connection import Connection, is_expired_token, is_permission, prefix_end, reason

CHECK_TIMEOUT = 5.0


class Stuck(ConnectionError):
    """The watch is not delivering what etcd shows changed under the prefix."""


Verdict = Confirmation | Exception  # etcd's reading, or why the watch is to be ended


class Reading(NamedTuple):
    """What the full reading found, at one revision of one cluster."""

    at: tuple[int, int]  # etcd's cluster id and revision
    keys: int  # under the prefixes
    newest: int  # the newest modification among them


class Freshness:
    """The check's decisions. It holds only what the previous check saw; the source runs it on a
    thread of its own and acts on each verdict: a :class:`Confirmation` to report, or the failure to
    end the watch with."""

    def __init__(self, prefixes: tuple[bytes, ...], interval: float) -> None:
        self.prefixes = prefixes
        self.interval = interval
        self._undelivered = 0  # a modification the watch had not delivered at the last check
        self._last: Reading | None = None  # the last full reading, while nothing was written since

    def check(self, connection: Connection, settled: Position | None, delivered: int | None) -> Verdict:
        """Ask etcd; ``settled``: what the files hold; ``delivered``: the last revision the watch gave."""
        at = time.time()
        try:
            response = self._ask(connection)
        except Exception as exc:
            self._undelivered, self._last = 0, None
            if is_permission(exc):
                return exc
            return ConnectionError(f"no answer to a freshness check: {reason(exc)}")
        (_cluster, revision), keys, newest = response
        if delivered is not None and delivered < self._undelivered:
            late, self._undelivered = self._undelivered, 0
            return Stuck(f"revision {late} had still not come through the watch {self.interval:g} s later")
        self._undelivered = newest if delivered is not None and newest > delivered else 0
        current = settled is not None and newest <= settled.revision and keys == settled.keys
        return Confirmation(revision, at, current)

    def _ask(self, connection: Connection) -> Reading:
        """The last full reading if etcd is still at its revision (step 1), else a new one (step 2)."""
        at = self._revision(connection, self.prefixes[0])
        if self._last is None or self._last.at != at:
            self._last = self._read(connection)
            return self._last
        for prefix in self.prefixes[1:]:
            self._revision(connection, prefix)  # read permission on each prefix, as step 2 needs it
        return self._last

    def _revision(self, connection: Connection, prefix: bytes) -> tuple[int, int]:
        """etcd's cluster id and revision, from a linearizable read of one key in ``prefix``."""
        request = etcdrpc.RangeRequest(key=prefix or b"\0", count_only=True)
        header = self._range(connection, request).header
        return header.cluster_id, header.revision

    def _read(self, connection: Connection) -> Reading:
        """etcd's revision, and at it, the keys under the prefixes and the newest modification among
        them (the first prefix read at the newest revision, every other pinned to it)."""
        cluster = revision = keys = newest = 0
        for prefix in self.prefixes:
            request = etcdrpc.RangeRequest(
                key=prefix,
                range_end=prefix_end(prefix),
                keys_only=True,
                limit=1,
                sort_order=etcdrpc.RangeRequest.DESCEND,
                sort_target=etcdrpc.RangeRequest.MOD,
                revision=revision,
            )
            response = self._range(connection, request)
            cluster, revision = response.header.cluster_id, revision or response.header.revision
            keys += response.count
            newest = max(newest, response.kvs[0].mod_revision if response.kvs else 0)
        return Reading((cluster, revision), keys, newest)

    def _range(self, connection: Connection, request: Any) -> Any:
        try:
            return connection.kv.Range(request, CHECK_TIMEOUT, metadata=connection.metadata)
        except Exception as exc:
            if not is_expired_token(exc):
                raise
        connection.reauthenticate()  # tokens expire; the watch itself does not need a new one
        return connection.kv.Range(request, CHECK_TIMEOUT, metadata=connection.metadata)
