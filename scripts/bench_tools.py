"""The processes scripts/bench.py measures: our dispenser, the original Go tool, ``etcdctl watch``, and
fleets of dispensers, each in front of a small child that reports every SIGHUP with what it read."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pyetcd import etcdrpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from etcd_server import EtcdServer  # noqa: E402

PREFIX = "/bench/"
SECOND = "/bench2/"  # the second prefix, where keys are spread over two
TXN_OPS = 128

# The child: on SIGHUP it reads the 'seq' file and reports "kind time seq id" on a FIFO (lines shorter
# than PIPE_BUF: whole, even with many children writing).
CHILD = r"""
import os, signal, sys, time
target, fifo, ident = sys.argv[1], sys.argv[2], sys.argv[3]
out = os.open(fifo, os.O_WRONLY)  # one os.write(2) per report: whole lines
def seq():
    try:
        with open(os.path.join(target, "seq")) as f:
            return f.read()
    except OSError:
        return "-"
def report(kind):
    os.write(out, f"{kind} {time.time():.6f} {seq()} {ident}\n".encode())
# Blocked and taken with sigwaitinfo: a handler and a pause() loop lose a signal that arrives just
# before pause(2) blocks, and the benchmark, waiting for its report, would wait forever.
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP, signal.SIGTERM})
report("start")
while signal.sigwaitinfo({signal.SIGHUP, signal.SIGTERM}).si_signo == signal.SIGHUP:
    report("hup")
"""


# What the dispenser's named dependencies take before any of its own code runs: the interpreter with
# pyetcd (grpc, protobuf) and pydantic-settings imported and one settings class validated.
FLOOR = r"""
import sys, pyetcd, pydantic_settings
class Settings(pydantic_settings.BaseSettings):
    endpoints: str = ""
Settings()
print("ready", flush=True)
sys.stdin.read()
"""


def floor_mib() -> float:
    """Resident memory of FLOOR, in this interpreter."""
    process = subprocess.Popen(
        [sys.executable, "-c", FLOOR], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None and process.stdin is not None
    process.stdout.readline()
    try:
        return rss_mib(process.pid)
    finally:
        process.stdin.close()
        process.wait()


# The dispenser measured: the one installed beside this interpreter, unless --ours names another
# (an earlier version installed elsewhere, to compare before and after in one sitting).
OURS = shutil.which("etcd-config-dispenser", path=os.path.dirname(sys.executable)) or ""


def ours() -> list[str]:
    return [OURS]


class Reports:
    """The children's reports, read from one FIFO: (kind, time, seq, id)."""

    def __init__(self, fifo: Path) -> None:
        self.path = fifo
        os.mkfifo(fifo)
        self.lines: list[tuple[str, float, str, str]] = []
        self.changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        with open(self.path) as fifo:  # blocks until the first child opens it
            for line in fifo:
                kind, stamp, seq, ident = line.rstrip("\n").split(" ", 3)
                with self.changed:
                    self.lines.append((kind, float(stamp), seq, ident))
                    self.changed.notify_all()

    def take(self, kind: str, seq: str | None, count: int = 1, timeout: float = 60.0) -> list[float]:
        """The times of ``count`` reports of ``kind`` (with ``seq``), removed from what is kept."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                found = [i for i, (k, _t, s, _id) in enumerate(self.lines) if k == kind and seq in (None, s)]
                if len(found) >= count:
                    times = [self.lines[i][1] for i in found[:count]]
                    for index in reversed(found[:count]):
                        del self.lines[index]
                    return times
                if not self.changed.wait(max(0.0, deadline - time.monotonic())):
                    raise TimeoutError(f"{len(found)} of {count} {kind} {seq} reports")

    def count(self, kind: str) -> int:
        with self.changed:
            return sum(1 for k, *_rest in self.lines if k == kind)


class Projector:
    """One dispenser (``program``: ours, or the original) with its reporting child."""

    def __init__(
        self,
        program: list[str],
        endpoint: str,
        target: Path,
        reports: Reports,
        ident: str = "0",
        flags: tuple[str, ...] = (),
    ) -> None:
        self.target = target
        target.mkdir(parents=True)  # the original needs it to exist
        argv = [
            *program,
            f"--prefix={PREFIX}",
            f"--target={target}",
            "--signal=SIGHUP",
            *flags,
            "--",
            sys.executable,
            "-c",
            CHILD,
            str(target),
            str(reports.path),
            ident,
        ]
        env = {**os.environ, "ETCD_ENDPOINTS": endpoint}
        if "--log-level=warning" not in flags and program == ours():
            argv.insert(1, "--log-level=warning")
        self.started_at = time.time()
        # A session of its own: the original signals its whole process group.
        self.process = subprocess.Popen(argv, env=env, start_new_session=True, stderr=subprocess.DEVNULL)

    def rss_mib(self) -> float:
        return rss_mib(self.process.pid)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


class EtcdctlWatch:
    """``etcdctl watch --prefix -w json``: the time each revision reached etcd's own Go client."""

    def __init__(self, endpoint: str) -> None:
        argv = ["etcdctl", f"--endpoints={endpoint}", "watch", "--prefix", PREFIX, "-w", "json"]
        self.process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, text=True, env={**os.environ, "ETCDCTL_API": "3"}
        )
        self.seen: dict[int, float] = {}
        threading.Thread(target=self._read, daemon=True).start()
        time.sleep(0.5)  # let the watch be created

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            stamp = time.time()
            try:
                response = json.loads(line)
            except ValueError:
                continue
            for event in response.get("Events") or []:
                self.seen.setdefault(int(event["kv"]["mod_revision"]), stamp)

    def wait(self, revision: int, timeout: float = 10.0) -> float:
        deadline = time.monotonic() + timeout
        while revision not in self.seen:
            if time.monotonic() > deadline:
                raise TimeoutError(f"etcdctl never saw revision {revision}")
            time.sleep(0.0005)
        return self.seen[revision]

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


# Where etcd's data and the targets go: memory (/dev/shm) where there is one. On this machine kind the
# disk makes etcd's fsync of every commit vary by milliseconds, and creating a file takes 20 us in some
# parts of the file system and 0.4-0.6 ms in others (/tmp's, here): figures on disk say more about where
# a directory happens to be than about the code. --dir changes it (scripts/bench.py).
WORK = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())


@contextmanager
def workspace(prefix: str) -> Iterator[Path]:
    """A temporary directory under WORK, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix=prefix, dir=WORK) as name:
        yield Path(name)


@contextmanager
def etcd_with(
    keys: int, value_size: int, subdirs: int, work: Path, spread: bool = False
) -> Iterator[EtcdServer]:
    """A throwaway etcd holding ``keys`` keys under the prefix (``spread``: every other one under the
    second prefix), and the 'seq' key."""
    with EtcdServer(work / "etcd", ["--quota-backend-bytes=8589934592"]).running() as etcd:
        fill(etcd, keys, value_size, subdirs, spread)
        yield etcd


def fill(etcd: EtcdServer, keys: int, value_size: int, subdirs: int, spread: bool = False) -> None:
    value = b"v" * value_size
    prefixes = (PREFIX, SECOND) if spread else (PREFIX,)
    names = [
        f"{prefixes[i % len(prefixes)]}d{i % subdirs}/k{i}"
        if subdirs
        else f"{prefixes[i % len(prefixes)]}k{i}"
        for i in range(keys)
    ]
    names.append(f"{PREFIX}seq")
    with etcd.client() as client:
        for start in range(0, len(names), TXN_OPS):
            ops = [client.transactions.put(n, value) for n in names[start : start + TXN_OPS]]
            client.transaction(compare=[], success=ops, failure=[])


def commit(client: Any, pairs: list[tuple[str, str]]) -> int:
    """One transaction; its revision, from its own response (a second request to learn it would load
    the machine while the watchers measured are at work)."""
    ops = [
        etcdrpc.RequestOp(request_put=etcdrpc.PutRequest(key=k.encode(), value=v.encode())) for k, v in pairs
    ]
    response = client.kvstub.Txn(etcdrpc.TxnRequest(success=ops), 10.0, metadata=client.metadata)
    return int(response.header.revision)


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User plus system time a process has used so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def etcd_metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else float("nan")


def du_mib(path: Path) -> float:
    # a generation may be collected while du walks it: its complaint does not matter, its total does
    done = subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True, check=False)
    return int(done.stdout.split()[0]) / 1024
