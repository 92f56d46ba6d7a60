"""etcd as a stream of batches: one snapshot, then one batch per watch response, forever.

This is the only module that talks to etcd (through ``pyetcd``, the maintained fork of python-etcd3, and
its gRPC stubs). It runs in its own thread and hands each :class:`Batch` to a callback:

- a *snapshot* batch holds every key under the prefix at one revision R, read in pages pinned to R;
- a *change* batch holds the events of one watch response. etcd never splits a revision across
  responses, so a batch is one transaction, or a catch-up run of whole transactions.

Trouble never ends the stream. A failure is logged once per outage, retried with capped jittered
backoff against the next endpoint, and the watch resumes from the last delivered revision + 1. A
compacted revision, or a snapshot cut short by compaction, starts a new snapshot; the receiver diffs
it against what it has, so keys deleted meanwhile go away too.
"""

from __future__ import annotations

import _ssl
import logging
import os
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.experimental
import pyetcd
from pyetcd import etcdrpc

from .metrics import Metrics
from .settings import Endpoint, EtcdConfig, Tls

PAGE_SIZE = 500
CALL_TIMEOUT = 10.0
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 5.0

# Keepalive finds a hung (not dead) server in about 7 s; etcd answers pings more often than every 5 s
# with GOAWAY too_many_pings, so 10 s is as low as it goes. Messages may be large: a page of big values.
# The watch is read on the thread that iterates it: without this, a gRPC thread receives each response
# and wakes ours, a thread switch on the way of every change (about 0.1 ms of 1.3 ms here).
CHANNEL_OPTIONS: list[tuple[str, int | str]] = [
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 3_000),
    ("grpc.http2.ping_timeout_ms", 3_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_receive_message_length", -1),
    (grpc.experimental.ChannelOptions.SingleThreadedUnaryStream, 1),
]
WATCH_METHOD = "/etcdserverpb.Watch/Watch"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Batch:
    """Keys and their new values (None: deleted) at ``revision``; a snapshot replaces everything."""

    revision: int
    changes: dict[bytes, bytes | None]
    snapshot: bool = False


class Compacted(Exception):
    """The revision we need is gone from etcd's history: take a new snapshot."""


class Source:
    """Reads the prefix from etcd and delivers batches until :meth:`stop`."""

    def __init__(
        self, config: EtcdConfig, prefix: bytes, deliver: Callable[[Batch], None], metrics: Metrics
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.prefix = prefix
        self.range_end = _prefix_end(prefix)  # for the watch
        self.deliver = deliver
        self.revision: int | None = None  # the last revision delivered
        self._backoff = BACKOFF_FIRST
        self._stopping = threading.Event()
        self._stream: Any = None
        self._attempt = 0
        self._outage_since: float | None = None

    def run(self) -> None:
        while not self._stopping.is_set():
            client = None
            try:
                client = self._connect()
                if self.revision is None:
                    self._snapshot(client)
                self._watch(client, on_live=self._recovered)
            except Compacted as exc:
                log.info("etcd compacted the history we need (%s); reading the prefix anew", exc)
                self.revision = None
            except Exception as exc:
                self._failed(exc)
                self._stopping.wait(self._backoff * random.uniform(0.5, 1.0))
                self._backoff = min(self._backoff * 2, BACKOFF_MAX)
            finally:
                if client is not None:
                    client.close()

    def stop(self) -> None:
        self._stopping.set()
        stream = self._stream
        if stream is not None:
            stream.cancel()

    # -- connecting ----------------------------------------------------------------------------------------

    def _connect(self) -> Any:
        """A client for the next endpoint in turn."""
        endpoint = self.config.endpoints[self._attempt % len(self.config.endpoints)]
        self._attempt += 1
        return connect(self.config, endpoint)

    def _failed(self, exc: Exception) -> None:
        self.metrics.etcd_connected.set(0)
        self.metrics.errors.labels("etcd").inc()
        reason = _reason(exc)
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            log.warning("etcd %s: %s; keeping the current files and retrying", self.config.describe(), reason)
        else:
            log.debug("etcd still failing: %s", reason)

    def _recovered(self) -> None:
        """The watch is live: a later outage starts again from the shortest backoff."""
        self.metrics.etcd_connected.set(1)
        self._backoff = BACKOFF_FIRST
        if self._outage_since is not None:
            took = time.monotonic() - self._outage_since
            log.warning("etcd is back after %.1f s; resuming at revision %s", took, self.revision)
            self._outage_since = None

    # -- reading -------------------------------------------------------------------------------------------

    def _snapshot(self, client: Any) -> None:
        """Every key under the prefix at one revision."""
        try:
            revision, items = read_prefix(client, self.prefix)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.OUT_OF_RANGE:
                raise Compacted("while reading the prefix") from None
            raise
        self.revision = revision
        self.deliver(Batch(revision, dict(items), snapshot=True))

    def _watch(self, client: Any, on_live: Callable[[], None]) -> None:
        """Deliver a batch per watch response, from the last delivered revision + 1, until stopped."""
        assert self.revision is not None
        create = etcdrpc.WatchCreateRequest(
            key=self.prefix, range_end=self.range_end, start_revision=self.revision + 1, progress_notify=True
        )
        # Called as one request and a stream of responses: etcd keeps a watch whose client closed its
        # side (the gRPC gateway does so), and only this kind of call can be read on our own thread.
        watch = client.channel.unary_stream(
            WATCH_METHOD,
            request_serializer=etcdrpc.WatchRequest.SerializeToString,
            response_deserializer=etcdrpc.WatchResponse.FromString,
        )
        stream = watch(etcdrpc.WatchRequest(create_request=create), metadata=client.metadata)
        self._stream = stream
        try:
            if self._stopping.is_set():
                return
            for response in stream:
                if response.compact_revision:
                    raise Compacted(f"compacted up to revision {response.compact_revision}")
                if response.canceled:
                    raise ConnectionError(f"watch cancelled by etcd: {response.cancel_reason or 'no reason'}")
                if response.created:
                    on_live()
                self._deliver_events(response)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED or not self._stopping.is_set():
                raise
        finally:
            self._stream = None
        if not self._stopping.is_set():
            raise ConnectionError("etcd closed the watch stream")

    def _deliver_events(self, response: Any) -> None:
        if not response.events:
            # A progress notification: nothing under the prefix changed up to this revision.
            self.revision = max(self.revision or 0, response.header.revision)
            return
        changes: dict[bytes, bytes | None] = {}
        revision = 0
        for event in response.events:
            kv = event.kv
            changes[kv.key] = None if event.type == event.DELETE else kv.value
            revision = max(revision, kv.mod_revision)
        self.revision = revision
        self.deliver(Batch(revision, changes))


def read_prefix(client: Any, prefix: bytes) -> tuple[int, dict[bytes, bytes]]:
    """Every key under the prefix at one revision: pages pinned to the first page's revision."""
    items: dict[bytes, bytes] = {}
    start, end, revision = prefix, _prefix_end(prefix), 0
    while True:
        request = etcdrpc.RangeRequest(key=start, range_end=end, limit=PAGE_SIZE, revision=revision)
        response = client.kvstub.Range(request, CALL_TIMEOUT, metadata=client.metadata)
        revision = revision or response.header.revision
        items.update((kv.key, kv.value) for kv in response.kvs)
        if not response.more or not response.kvs:
            return revision, items
        start = response.kvs[-1].key + b"\0"


def connect(config: EtcdConfig, endpoint: Endpoint) -> Any:
    """A client for one endpoint, authenticated if credentials are set."""
    tls = config.tls
    creds, options = None, CHANNEL_OPTIONS
    if tls is not None and tls.insecure_skip_verify:
        creds, name = _unverified_credentials(endpoint, tls)
        options = [*CHANNEL_OPTIONS, ("grpc.ssl_target_name_override", name)]
    elif tls is not None:
        creds = _credentials(tls, tls.server_ca)
    ep = pyetcd.Endpoint(
        endpoint.host, endpoint.port, secure=tls is not None, creds=creds, time_retry=0.5, opts=options
    )
    try:
        client = pyetcd.MultiEndpointEtcd3Client(
            endpoints=[ep], timeout=CALL_TIMEOUT, user=config.username, password=config.password
        )
    except BaseException:
        ep.close()  # authentication failed: the client that would close the channel does not exist
        raise
    # The token travels as plain metadata: grpcio refuses call credentials on an insecure channel.
    client.call_credentials = None
    return client


class EtcdError(Exception):
    """A one-line reason why etcd could not be read or written (for etcd-config-push)."""


class Store:
    """Reading a prefix whole and changing it in one transaction: what etcd-config-push needs."""

    def __init__(self, config: EtcdConfig) -> None:
        self.config = config

    def read(self, prefix: bytes) -> dict[bytes, bytes]:
        """Every key under the prefix and its value, at one revision."""
        items: dict[bytes, bytes] = {}
        self._with_client(lambda client: items.update(read_prefix(client, prefix)[1]))
        return items

    def commit(self, puts: dict[bytes, bytes], deletes: list[bytes]) -> int:
        """All puts and deletes in ONE transaction; the revision it made."""
        request = etcdrpc.TxnRequest(
            success=[
                etcdrpc.RequestOp(request_put=etcdrpc.PutRequest(key=k, value=v)) for k, v in puts.items()
            ]
            + [etcdrpc.RequestOp(request_delete_range=etcdrpc.DeleteRangeRequest(key=k)) for k in deletes]
        )
        revision = 0

        def send(client: Any) -> None:
            nonlocal revision
            revision = client.kvstub.Txn(request, CALL_TIMEOUT, metadata=client.metadata).header.revision

        self._with_client(send)
        return revision

    def _with_client(self, use: Callable[[Any], None]) -> None:
        """Try each endpoint once; the last failure, in one line, if none worked."""
        failure = ""
        for endpoint in self.config.endpoints:
            try:
                client = connect(self.config, endpoint)
            except Exception as exc:
                failure = _reason(exc)
                continue
            try:
                use(client)
                return
            except grpc.RpcError as exc:
                failure = _reason(exc)
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    break  # etcd answered: another member would answer the same
            finally:
                client.close()
        raise EtcdError(f"etcd {self.config.describe()}: {failure}")


def _credentials(tls: Tls, roots: bytes | None) -> Any:
    return grpc.ssl_channel_credentials(
        root_certificates=roots, private_key=tls.client_key, certificate_chain=tls.client_cert
    )


def _unverified_credentials(endpoint: Endpoint, tls: Tls) -> tuple[Any, str]:
    """ETCD_INSECURE_SKIP_VERIFY: gRPC for Python cannot turn verification off, so trust whatever chain
    the server presents right now, under a name its certificate carries."""
    chain = _presented_chain(endpoint, tls)
    roots = b"".join(ssl.DER_cert_to_PEM_cert(der).encode() for der in chain)
    return _credentials(tls, roots), _certificate_name(chain[0]) or endpoint.host


def _presented_chain(endpoint: Endpoint, tls: Tls) -> list[bytes]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if tls.client_cert and tls.client_key:
        # ssl loads a client certificate only from a path; an anonymous memory file keeps the key off disk.
        fd = os.memfd_create("etcd-client", os.MFD_CLOEXEC)
        try:
            os.write(fd, tls.client_cert + b"\n" + tls.client_key)
            context.load_cert_chain(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
    with (
        socket.create_connection((endpoint.host, endpoint.port), timeout=CALL_TIMEOUT) as raw,
        context.wrap_socket(raw) as conn,
    ):
        sslobj = getattr(conn, "_sslobj", None)  # get_unverified_chain is public from Python 3.13 on
        chain = sslobj.get_unverified_chain() if sslobj else None
    if not chain:
        raise ConnectionError(f"{endpoint.netloc} presented no certificate")
    return [cert.public_bytes(_ssl.ENCODING_DER) for cert in chain]


def _certificate_name(der: bytes) -> str | None:
    """A DNS name or IP address the certificate is for, to verify the host name against."""
    # Imported here: only insecure mode needs it, and it costs every other run 10 MiB of memory.
    from cryptography import x509

    certificate = x509.load_der_x509_certificate(der)
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        common = certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        return str(common[0].value) if common else None
    found = names.get_values_for_type(x509.DNSName) + [
        str(ip) for ip in names.get_values_for_type(x509.IPAddress)
    ]
    return found[0] if found else None


def _prefix_end(prefix: bytes) -> bytes:
    """The first key after every key that starts with ``prefix``."""
    stripped = prefix.rstrip(b"\xff")
    return stripped[:-1] + bytes([stripped[-1] + 1]) if stripped else b"\0"


def _reason(exc: Exception) -> str:
    """One line about a failure, for logs; gRPC details never carry values or passwords."""
    if isinstance(exc, grpc.RpcError):
        details = exc.details() if hasattr(exc, "details") else ""
        return f"{exc.code().name}: {details}"
    return str(exc) or type(exc).__name__
