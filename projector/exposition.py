"""Health and metrics over HTTP, for ``--metrics-address``: the only module that loads the Prometheus
client library.

``/metrics`` in Prometheus' text format (the library renders it from the numbers in metrics.py),
``/healthz`` (200 while the main loop keeps turning), ``/readyz`` (200 once the first projection is live
and the required files are there, 503 before). Nothing is written into the target: it holds only the
projection.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from .metrics import Metrics


class _Numbers(Collector):
    """The dispenser's numbers, read at each scrape."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        for number in self.metrics.numbers:
            name = f"dispenser_{number.name}"
            if number.kind == "counter":
                yield CounterMetricFamily(name, number.help, value=number.value)
            else:
                yield GaugeMetricFamily(name, number.help, value=number.value)
        errors = self.metrics.errors
        counted = CounterMetricFamily(f"dispenser_{errors.name}", errors.help, labels=[errors.label])
        for value, number in sorted(errors.values.items()):
            counted.add_metric([value], number.value)
        yield counted


def serve(metrics: Metrics, host: str, port: int) -> ThreadingHTTPServer:
    """Serve the endpoints from a daemon thread; the server, so that its address can be read."""
    registry = CollectorRegistry()
    registry.register(_Numbers(metrics))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._answer(200, generate_latest(registry), CONTENT_TYPE_LATEST)
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
