"""What etcd-config-push needs of etcd: a prefix read whole, and a change made in one transaction."""

from __future__ import annotations

from collections.abc import Callable

import grpc
from pyetcd import etcdrpc

from .connection import CALL_TIMEOUT, Connection, read_prefix, reason
from .settings import EtcdConfig


class EtcdError(Exception):
    """A one-line reason why etcd could not be read or written."""


class Store:
    """Reading a prefix whole and changing it in one transaction, through the first endpoint that works."""

    def __init__(self, config: EtcdConfig) -> None:
        self.config = config

    def read(self, prefix: bytes) -> dict[bytes, bytes]:
        """Every key under the prefix and its value, at one revision."""
        items: dict[bytes, bytes] = {}
        self._with_connection(lambda connection: items.update(read_prefix(connection, prefix)[1]))
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

        def send(connection: Connection) -> None:
            nonlocal revision
            response = connection.kv.Txn(request, CALL_TIMEOUT, metadata=connection.metadata)
            revision = response.header.revision

        self._with_connection(send)
        return revision

    def _with_connection(self, use: Callable[[Connection], None]) -> None:
        """Try each endpoint once; the last failure, in one line, if none worked."""
        failure = ""
        for endpoint in self.config.endpoints:
            try:
                connection = Connection(self.config, endpoint)
            except Exception as exc:
                failure = reason(exc)
                continue
            try:
                use(connection)
                return
            except grpc.RpcError as exc:
                failure = reason(exc)
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    break  # etcd answered: another member would answer the same
            finally:
                connection.close()
        raise EtcdError(f"etcd {self.config.describe()}: {failure}")
