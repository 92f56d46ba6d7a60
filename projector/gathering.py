"""Several prefixes on several watchers: the responses of one revision gathered into one batch.

Used only where the role may not read the range that covers every prefix (source.py watches that
range with one watcher otherwise). etcd answers each prefix's watcher on its own, so a transaction
that touches two prefixes comes as two responses with the same revision. While the watchers keep up,
a member puts them on the stream one after the other, before any of a later revision, so the batch of
a revision is complete when a response of a later revision arrives, or when etcd answers the progress
request sent once the first response of the revision came. That is a best effort, not a guarantee:
a watcher whose stream is full is moved to etcd's catch-up group on its own, and before etcd 3.4.24
and 3.5.8 a progress request is answered without waiting for such a watcher, so under a backlog a
revision can be delivered in parts (README, "Several prefixes", says so). etcd's gRPC proxy does not
answer progress requests (``not supported request type by gRPC proxy``) and forwards the prefixes'
responses independently: there, once one answer has been waited for in vain, a revision is complete
after ``QUIET`` seconds without another response for it.

A catch-up response (a watcher behind the head) carries the head's revision in its header for every
watcher caught up in the same pass: responses are gathered by that header revision, and the batch's
revision is the newest modification it holds, as for one prefix.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from .batches import Batch

QUIET = 0.02  # seconds: where progress requests go unanswered, how long a revision stays open
ANSWER = 0.5  # seconds: how long an answer to a progress request is waited for before it counts as none
LOOK = 0.25  # seconds: how often the waiter looks at an open batch that nobody woke it for
PROGRESS_ANSWER = -1  # the watch id of etcd's answer to a progress request


class Gathering:
    """The open revision's changes, delivered as one batch once it is complete. ``take`` runs on the
    watch's thread and a waiter on its own (for the deadlines): both under one lock, so that batches go
    out in order."""

    def __init__(self, deliver: Callable[[Batch], None], ask: Callable[[], None]) -> None:
        self._deliver = deliver
        self._ask = ask
        self._lock = threading.Condition()
        self._changes: dict[bytes, bytes | None] = {}
        self._header = 0  # the header revision of the open batch; 0: none is open
        self._revision = 0  # the newest modification in it
        self._asked = False  # a progress request is unanswered
        self._answers = True  # whether this stream's server answers progress requests
        self._deadline: float | None = None  # when the open batch is delivered anyway
        self._closed = False
        threading.Thread(target=self._wait, name="etcd-gathering", daemon=True).start()

    def take(self, response: Any) -> None:
        """One response of the stream (events of one watcher, or a progress notification)."""
        with self._lock:
            header = response.header.revision
            if not response.events:
                if response.watch_id == PROGRESS_ANSWER and self._asked:
                    self._asked = False
                    if self._header and header >= self._header:
                        self._flush()
                return
            if self._header and header != self._header:
                self._flush()
            for event in response.events:
                kv = event.kv
                self._changes[kv.key] = None if event.type == event.DELETE else kv.value
                self._revision = max(self._revision, kv.mod_revision)
            self._header = header
            if self._answers and not self._asked:
                self._asked = True
                self._ask()
            self._deadline = time.monotonic() + (ANSWER if self._answers else QUIET)
            if not self._answers:  # (else the waiter's next look is soon enough: waking it costs a change)
                self._lock.notify()

    def close(self) -> None:
        """The stream ended: what is open is not delivered (the next watch starts from what was)."""
        with self._lock:
            self._closed = True
            self._changes, self._header, self._revision, self._deadline = {}, 0, 0, None
            self._lock.notify()

    def _flush(self) -> None:
        batch = Batch(self._revision, self._changes)
        self._changes, self._header, self._revision, self._deadline = {}, 0, 0, None
        self._deliver(batch)

    def _wait(self) -> None:
        """The deadlines' thread: an open batch whose answer never came (a proxy), or that stayed
        quiet, is delivered."""
        with self._lock:
            while not self._closed:
                if self._deadline is None:
                    self._lock.wait(LOOK)
                    continue
                remaining = self._deadline - time.monotonic()
                if remaining > 0:
                    self._lock.wait(min(remaining, LOOK))
                    continue
                if self._asked:  # never answered: from now on a quiet stream completes a revision
                    self._asked, self._answers = False, False
                self._flush()
