"""What the dispenser has done, as numbers an operator can read: recorded here, served by exposition.py.

``Metrics`` always exists (the other modules record into it unconditionally) and costs nothing to keep:
plain numbers under a lock. The Prometheus client library is loaded only when ``--metrics-address`` asks
for the numbers to be served (about 12 MiB of memory that every other run does without).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

# The main loop wakes at least this often while metrics are served, so that /healthz can tell a
# loop that waits from one that is stuck.
HEARTBEAT_SECONDS = 5.0
STUCK_AFTER_SECONDS = 60.0

_LOCK = threading.Lock()


@dataclass
class Number:
    """One gauge or counter (``kind``), as Prometheus names it: ``dispenser_<name>``."""

    name: str
    kind: str
    help: str
    value: float = 0.0

    def set(self, value: float) -> None:
        self.value = value

    def inc(self) -> None:
        with _LOCK:
            self.value += 1


@dataclass
class Labelled:
    """A counter per value of one label."""

    name: str
    label: str
    help: str
    values: dict[str, Number] = field(default_factory=dict)

    def labels(self, value: str) -> Number:
        with _LOCK:
            return self.values.setdefault(value, Number(self.name, "counter", self.help))


class Metrics:
    def __init__(self) -> None:
        self.applied_revision = Number(
            "applied_revision", "gauge", "etcd revision of the last change the files took"
        )
        self.generations = Number("generations", "counter", "generations that went live")
        self.signals = Number("signals", "counter", "signals sent to the child after a change")
        self.template_renders = Number(
            "template_renders", "counter", "templates rendered: those whose inputs a change touched"
        )
        self.restarts = Number(
            "restarts", "counter", "times the child was restarted after a change (--restart)"
        )
        self.etcd_connected = Number("etcd_connected", "gauge", "1 while the watch on etcd is live, else 0")
        self.last_sync = Number(
            "last_sync_timestamp_seconds",
            "gauge",
            "when the files were last confirmed to match etcd (Unix time)",
        )
        self.rejected_keys = Number("rejected_keys", "gauge", "keys under the prefix that are refused")
        self.errors = Labelled(
            "errors", "kind", "errors by kind: etcd, permission, write, check, on_change, guard, template"
        )
        self.readiness = Number(
            "ready", "gauge", "1 once the first projection is live and the command started"
        )
        self.start_time = Number(
            "start_time_seconds", "gauge", "when this dispenser started (Unix time)", time.time()
        )
        self.heartbeat = time.monotonic()

    @property
    def numbers(self) -> list[Number]:
        return [n for n in vars(self).values() if isinstance(n, Number)]

    @property
    def ready(self) -> bool:
        return bool(self.readiness.value)

    @ready.setter
    def ready(self, ready: bool) -> None:
        self.readiness.set(float(ready))

    def beat(self) -> None:
        self.heartbeat = time.monotonic()

    @property
    def healthy(self) -> bool:
        return time.monotonic() - self.heartbeat < STUCK_AFTER_SECONDS
