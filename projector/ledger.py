"""The receiving side of the freshness check: what the files hold, and a reading of etcd waiting for
them. ``dispenser_last_sync_timestamp_seconds`` moves here: to the moment etcd was read, once the files
hold what it showed (freshness.py says how etcd is asked)."""

from __future__ import annotations

from .batches import Confirmation, Position
from .metrics import Metrics


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
