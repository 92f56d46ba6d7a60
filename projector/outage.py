"""What an outage of etcd says: one line when it begins (or turns from a failure of etcd into a refused
permission, or back), debug lines while it lasts, one line when the watch is live again, and the
metrics that follow it (``dispenser_etcd_connected``, ``dispenser_errors_total`` by kind)."""

from __future__ import annotations

import logging
import time

from .connection import is_permission, reason
from .metrics import Metrics

log = logging.getLogger(__name__)


class Outage:
    """The source's outages, for the prefixes ``named`` (a text for log lines)."""

    def __init__(self, named: str, metrics: Metrics) -> None:
        self.named = named
        self.metrics = metrics
        self._since: tuple[float, bool] | None = None  # since when, and whether for a permission
        self._was_live = False

    def failed(self, exc: Exception, where: str) -> None:
        permission = is_permission(exc)
        self.metrics.etcd_connected.set(0)
        self.metrics.errors.labels("permission" if permission else "etcd").inc()
        text = reason(exc)
        if self._since is not None and self._since[1] == permission:
            log.debug("etcd still failing: %s", text)
            return
        self._since = (self._since[0] if self._since else time.monotonic(), permission)
        if not permission:
            log.warning("etcd %s: %s; keeping the current files and retrying", where, text)
        else:
            lost = "permission to read %s was lost" if self._was_live else "not permitted to read %s"
            log.error(f"etcd %s: {lost}: %s; keeping the current files and retrying", where, self.named, text)

    def over(self, where: str, revision: int | None) -> None:
        """The watch is live."""
        self._was_live = True
        self.metrics.etcd_connected.set(1)
        if self._since is None:
            return
        since, permission = self._since
        what = f"permission to read {self.named}" if permission else "etcd"
        took = time.monotonic() - since
        log.warning(
            "%s is back after %.1f s (through %s); resuming at revision %s", what, took, where, revision
        )
        self._since = None
