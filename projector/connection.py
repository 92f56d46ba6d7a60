"""One connection to one etcd endpoint: the channel, its credentials, what every call carries, and
``read_prefix``, the read of a whole prefix at one revision that the dispenser and etcd-config-push share.

Every call we make sends the authentication token (when credentials are set) and ``hasleader``, the
metadata etcd's Go client sends for ``WithRequireLeader``: a member that has no leader (cut off from the
rest of its cluster) then refuses our calls at once instead of answering from its stale state, and it
ends a watch of ours once it has had no leader for three election timeouts.

Credentials: TLS with a CA, mutual TLS, or ``ETCD_INSECURE_SKIP_VERIFY``, which gRPC for Python cannot
do; for it each connection reads the chain the server presents and trusts exactly that. Failures are
described in one line that never holds a value or a password.
"""

from __future__ import annotations

import _ssl
import os
import socket
import ssl
from typing import Any

import grpc
import pyetcd
from pyetcd import etcdrpc

from .settings import Endpoint, EtcdConfig, Tls

CALL_TIMEOUT = 10.0
# Pages of a snapshot: etcd counts every key of the range for each page, so many small pages cost it
# the square of the prefix's size (50,000 keys: 0.6 s in pages of 500, 0.1 s in pages of 10,000). The
# first page is modest; the next ones aim at PAGE_BYTES, between PAGE_FIRST and PAGE_MOST keys.
PAGE_FIRST, PAGE_MOST, PAGE_BYTES = 1000, 20_000, 8 << 20

# Keepalive finds a hung (not dead) server in about 7 s; etcd answers pings more often than every 5 s
# with GOAWAY too_many_pings, so 10 s is as low as it goes. Messages may be large: a page of big values.
CHANNEL_OPTIONS: list[tuple[str, int | str]] = [
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 3_000),
    ("grpc.http2.ping_timeout_ms", 3_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_receive_message_length", -1),
]
REQUIRE_LEADER = ("hasleader", "true")


class Connection:
    """An authenticated channel to one endpoint, with the stubs and metadata our calls use."""

    def __init__(self, config: EtcdConfig, endpoint: Endpoint) -> None:
        self.config = config
        self.endpoint = endpoint
        self._client = _client(config, endpoint)
        self.kv = self._client.kvstub
        self.channel: grpc.Channel = self._client.channel
        self.metadata: tuple[tuple[str, str], ...] = _metadata(self._client.metadata)

    def reauthenticate(self) -> None:
        """A new token on the same channel: etcd's tokens expire (``--auth-token-ttl``)."""
        if self.config.username is None or self.config.password is None:
            return
        request = etcdrpc.AuthenticateRequest(name=self.config.username, password=self.config.password)
        response = self._client.authstub.Authenticate(request, CALL_TIMEOUT, metadata=(REQUIRE_LEADER,))
        self.metadata = _metadata((("token", response.token),))

    def close(self) -> None:
        self._client.close()


def _metadata(token: Any) -> tuple[tuple[str, str], ...]:
    return (*tuple(token or ()), REQUIRE_LEADER)


def _client(config: EtcdConfig, endpoint: Endpoint) -> Any:
    """A pyetcd client for one endpoint, authenticated if credentials are set."""
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


def prefix_end(prefix: bytes) -> bytes:
    """The first key after every key that starts with ``prefix``."""
    stripped = prefix.rstrip(b"\xff")
    return stripped[:-1] + bytes([stripped[-1] + 1]) if stripped else b"\0"


def reason(exc: BaseException) -> str:
    """One line about a failure, for logs; gRPC details never carry values or passwords."""
    if isinstance(exc, grpc.RpcError):
        details = exc.details() if hasattr(exc, "details") else ""
        return f"{exc.code().name}: {details}"
    return str(exc) or type(exc).__name__


def is_permission(exc: BaseException) -> bool:
    """Whether etcd refused us for who we are (credentials, role), not for how it is doing."""
    if isinstance(exc, grpc.RpcError):
        code = exc.code()
        if code == grpc.StatusCode.PERMISSION_DENIED:
            return True
        details = (exc.details() if hasattr(exc, "details") else "") or ""
        return code == grpc.StatusCode.INVALID_ARGUMENT and "authentication failed" in details
    return isinstance(exc, PermissionError)


def is_expired_token(exc: BaseException) -> bool:
    details = (exc.details() if isinstance(exc, grpc.RpcError) and hasattr(exc, "details") else "") or ""
    return "invalid auth token" in details


def each_readable(connection: Connection, prefixes: tuple[bytes, ...]) -> bool:
    """Whether the role may read every prefix (a count of each: no value is read)."""
    try:
        for prefix in prefixes:
            request = etcdrpc.RangeRequest(key=prefix, range_end=prefix_end(prefix), count_only=True)
            connection.kv.Range(request, CALL_TIMEOUT, metadata=connection.metadata)
    except grpc.RpcError as exc:
        if is_permission(exc):
            return False
        raise
    return True


def read_prefixes(connection: Connection, prefixes: tuple[bytes, ...]) -> tuple[int, dict[bytes, bytes]]:
    """Every key under the prefixes at one revision: the first page's, to which every other is pinned
    (a compaction past it meanwhile fails the read with OUT_OF_RANGE)."""
    revision, items = 0, {}
    for prefix in prefixes:
        revision, found = read_prefix(connection, prefix, revision)
        items.update(found)
    return revision, items


def read_prefix(connection: Connection, prefix: bytes, revision: int = 0) -> tuple[int, dict[bytes, bytes]]:
    """Every key under the prefix at one revision (the first page's, unless given): pages pinned to it."""
    items: dict[bytes, bytes] = {}
    start, end, limit = prefix, prefix_end(prefix), PAGE_FIRST
    while True:
        request = etcdrpc.RangeRequest(key=start, range_end=end, limit=limit, revision=revision)
        response = connection.kv.Range(request, CALL_TIMEOUT, metadata=connection.metadata)
        revision = revision or response.header.revision
        items.update((kv.key, kv.value) for kv in response.kvs)
        if not response.more or not response.kvs:
            return revision, items
        start = response.kvs[-1].key + b"\0"
        each = response.ByteSize() / len(response.kvs)
        limit = max(PAGE_FIRST // 10, min(PAGE_MOST, int(PAGE_BYTES / each)))
