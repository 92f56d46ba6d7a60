"""etcd's Watch as a gRPC call that keeps its sending side open and is read on the calling thread.

Watch is a bidirectional stream. Two properties matter to us, and no public call of grpc for Python has
both:

- The sending side must stay open. etcd's own gRPC proxy (``etcd grpc-proxy``) ends a watch the moment
  its client half-closes, with ``UNKNOWN: context canceled``; a watch made as a unary-stream call
  half-closes right after its request, so through a proxy it never sees a change.
- The responses should be read on our thread. A stream-stream call gets its responses from a channel
  thread that then wakes ours: one thread switch on the way of every change, about 0.1 ms of the 0.6 ms
  from a commit to our thread on loopback (docs/benchmarks.md).

So the call is started the way grpc starts its single-threaded unary-stream call (the
``SingleThreadedUnaryStream`` channel option), minus the half-close: a segregated call whose events are
taken from its own completion queue by the thread that iterates it. That uses grpc's internal module
``grpc._channel``, unchanged from grpcio 1.66 to 1.85. If its pieces are not what this expects (another
grpcio), the watch falls back to the public stream-stream call, with one warning.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Iterator
from typing import Any, Protocol

import grpc
from pyetcd import etcdrpc

METHOD = "/etcdserverpb.Watch/Watch"

log = logging.getLogger(__name__)


class WatchCall(Protocol):
    """What both kinds of call offer: responses in order, and cancel() from any thread."""

    def __iter__(self) -> Iterator[Any]: ...

    def __next__(self) -> Any: ...

    def cancel(self) -> bool: ...


_single_threaded = True  # until grpc's internals turn out to be other than expected


def open_watch(channel: grpc.Channel, request: Any, metadata: tuple[tuple[str, str], ...]) -> WatchCall:
    """Start a watch with ``request`` (a WatchRequest) as its first message; its responses in order."""
    if _single_threaded:
        try:
            return _Guarded(_single_threaded_call(channel, request.SerializeToString(), metadata))
        except (AttributeError, TypeError, ImportError) as exc:
            _fall_back(exc)
    return _threaded_call(channel, request, metadata)


def _fall_back(exc: Exception) -> None:
    global _single_threaded
    _single_threaded = False
    log.warning("grpc's internals are not as expected (%r); the watch now uses a channel thread", exc)


class _Guarded:
    """The single-threaded call, where anything but gRPC's own errors means that grpc's internals
    changed under us: from then on, watches use the public call (this one ends as a failed watch)."""

    def __init__(self, call: WatchCall) -> None:
        self._call = call

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        try:
            return next(self._call)
        except (StopIteration, grpc.RpcError):
            raise
        except Exception as exc:
            _fall_back(exc)
            raise ConnectionError("the watch failed inside grpc") from None

    def cancel(self) -> bool:
        return self._call.cancel()


def _single_threaded_call(channel: Any, request: bytes, metadata: tuple[tuple[str, str], ...]) -> WatchCall:
    from grpc import _channel
    from grpc._cython import cygrpc

    # What is due from the completion queue: as for a stream-stream call, plus the first message sent.
    due = (*_channel._STREAM_STREAM_INITIAL_DUE, cygrpc.OperationType.send_message)
    state = _channel._RPCState(due, None, None, None, None)
    # What grpc's own calls record for its observability plugin, read when the call ends.
    state.rpc_start_time = time.perf_counter()
    state.method, state.target = METHOD, str(getattr(channel, "_target", ""))
    flags = _channel._InitialMetadataFlags()
    batches = (
        (cygrpc.SendInitialMetadataOperation(metadata, flags), cygrpc.SendMessageOperation(request, 0)),
        (cygrpc.ReceiveStatusOnClientOperation(0),),
        (cygrpc.ReceiveInitialMetadataOperation(0),),
    )
    call = channel._channel.segregated_call(
        cygrpc.PropagationConstants.GRPC_PROPAGATE_DEFAULTS,
        METHOD.encode(),
        None,  # host
        None,  # no deadline
        metadata,
        None,  # call credentials: the token is in the metadata
        tuple((operations, None) for operations in batches),
        cygrpc.build_census_context(),
        None,  # registered call handle
    )
    rendezvous: WatchCall = _channel._SingleThreadedRendezvous(
        state, call, etcdrpc.WatchResponse.FromString, None
    )
    return rendezvous


def _threaded_call(channel: grpc.Channel, request: Any, metadata: tuple[tuple[str, str], ...]) -> WatchCall:
    return Stream(channel, [request], metadata)


class Stream:
    """The public stream-stream call, whose sending side stays open for more requests: a watch of
    several prefixes on one stream (their creations, then progress requests), or the fallback."""

    def __init__(self, channel: grpc.Channel, requests: list[Any], metadata: tuple[tuple[str, str], ...]):
        self._outbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        for request in requests:
            self._outbox.put(request)
        watch = channel.stream_stream(
            METHOD,
            request_serializer=etcdrpc.WatchRequest.SerializeToString,
            response_deserializer=etcdrpc.WatchResponse.FromString,
        )
        self._call: Any = watch(self._requests(), metadata=metadata)
        self._call.add_done_callback(lambda _call: self._outbox.put(None))

    def _requests(self) -> Iterator[Any]:
        while (request := self._outbox.get()) is not None:  # until the call ends
            yield request

    def request_progress(self) -> None:
        """Ask etcd for a progress notification: its answer follows the responses due before it."""
        self._outbox.put(etcdrpc.WatchRequest(progress_request=etcdrpc.WatchProgressRequest()))

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        return next(self._call)

    def cancel(self) -> bool:
        cancelled: bool = self._call.cancel()
        return cancelled
