"""Health and metrics for operators: what the dispenser has done, over HTTP when asked for.

``Metrics`` always exists (the other modules record into it unconditionally); ``serve`` exposes it on
``--metrics-address``: ``/metrics`` in Prometheus' text format, ``/healthz`` (200 while the main loop
keeps turning), ``/readyz`` (200 once the first projection is live, 503 before). Nothing is written
into the target: it holds only the projection.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# The main loop wakes at least this often while metrics are served, so that /healthz can tell a
# loop that waits from one that is stuck.
HEARTBEAT_SECONDS = 5.0
STUCK_AFTER_SECONDS = 60.0


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        gauge, counter = self._gauge, self._counter
        self.applied_revision = gauge("applied_revision", "etcd revision the files on disk reflect")
        self.generations = counter("generations", "generations that went live")
        self.signals = counter("signals", "signals sent to the child after a change")
        self.restarts = counter("restarts", "times the child was restarted after a change (--restart)")
        self.etcd_connected = gauge("etcd_connected", "1 while the watch on etcd is live, else 0")
        self.last_sync = gauge(
            "last_sync_timestamp_seconds", "when the files were last confirmed to match etcd (Unix time)"
        )
        self.rejected_keys = gauge("rejected_keys", "keys under the prefix that are refused")
        self.errors = Counter(
            "dispenser_errors",
            "errors by kind: etcd, permission, write, check, on_change",
            ["kind"],
            registry=self.registry,
        )
        self.ready = False
        self.heartbeat = time.monotonic()

    def _gauge(self, name: str, documentation: str) -> Gauge:
        return Gauge(f"dispenser_{name}", documentation, registry=self.registry)

    def _counter(self, name: str, documentation: str) -> Counter:
        return Counter(f"dispenser_{name}", documentation, registry=self.registry)

    def beat(self) -> None:
        self.heartbeat = time.monotonic()

    @property
    def healthy(self) -> bool:
        return time.monotonic() - self.heartbeat < STUCK_AFTER_SECONDS


def serve(metrics: Metrics, host: str, port: int) -> ThreadingHTTPServer:
    """Serve the endpoints from a daemon thread; the server, so that its address can be read."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._answer(200, generate_latest(metrics.registry), CONTENT_TYPE_LATEST)
            elif self.path == "/healthz":
                self._status(metrics.healthy, b"ok\n", b"main loop stuck\n")
            elif self.path == "/readyz":
                self._status(metrics.ready, b"ready\n", b"first projection not live yet\n")
            else:
                self._answer(404, b"not found\n")

        def _status(self, good: bool, yes: bytes, no: bytes) -> None:
            self._answer(200 if good else 503, yes if good else no)

        def _answer(self, code: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # scrapes every few seconds would drown the log

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
