#!/usr/bin/env python3
"""Benchmark: how fast a committed etcd transaction becomes files on disk plus a signal in the child.

Starts a throwaway etcd, runs the installed ``etcd-config-dispenser`` as a real process in front of a
small child, and prints a table; also writes it to docs/benchmarks.md and plots latency against the
number of keys to docs/benchmarks.png. Figures:

1. commit-to-signal latency for 2-key transactions with 100 and 1,000 keys projected, paired with
   ``etcdctl watch`` (etcd's own Go client) seeing the same revision;
2. scale: 10,000 keys of 2 KiB in 100 subdirectories: start-to-child time, one-key update latency,
   resident memory, disk used;
3. cost growth: one-key update latency and memory at 100 to 50,000 keys;
4. burst: 200 single-key puts as fast as possible: signals sent, time until the files equal etcd.

Usage: .venv/bin/python scripts/bench.py [--quick]   (needs etcd and etcdctl on PATH; scripts/setup)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pyetcd import etcdrpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from etcd_server import EtcdServer  # noqa: E402

PREFIX = "/bench/"
BEGIN, END = "<!-- results: written by scripts/bench.py -->", "<!-- end of results -->"
TXN_OPS = 128

# The child: on SIGHUP it reads the 'seq' file through ..data and reports (time, seq) on a FIFO.
CHILD = r"""
import os, signal, sys, time
target, fifo = sys.argv[1], sys.argv[2]
out = os.open(fifo, os.O_WRONLY)  # os.write: a handler may interrupt another handler's write
def seq():
    try:
        with open(os.path.join(target, "seq")) as f:
            return f.read()
    except OSError:
        return "-"
def report(kind):
    os.write(out, f"{kind} {time.time():.6f} {seq()}\n".encode())
signal.signal(signal.SIGHUP, lambda *_: report("hup"))
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
report("start")
while True:
    signal.pause()
"""


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


class Dispenser:
    """The dispenser with the reporting child; ``reports`` yields (kind, time, seq) as they come."""

    def __init__(self, etcd: EtcdServer, work: Path) -> None:
        self.target = work / "target"
        fifo = work / "reports.fifo"
        os.mkfifo(fifo)
        argv = [
            shutil.which("etcd-config-dispenser", path=os.path.dirname(sys.executable)) or "",
            f"--prefix={PREFIX}",
            f"--target={self.target}",
            "--signal=SIGHUP",
            "--log-level=warning",
            "--",
            sys.executable,
            "-c",
            CHILD,
            str(self.target),
            str(fifo),
        ]
        self.started_at = time.time()
        env = {**os.environ, "ETCD_ENDPOINTS": etcd.endpoint}
        self.process = subprocess.Popen(argv, env=env)
        self.fifo = open(fifo)  # noqa: SIM115 (open for the life of the run; blocks until the child opens it)
        self.lines: list[tuple[str, float, str]] = []
        self.changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.fifo:
            kind, stamp, seq = line.rstrip("\n").split(" ", 2)
            with self.changed:
                self.lines.append((kind, float(stamp), seq))
                self.changed.notify_all()

    def wait(self, kind: str, seq: str | None = None, timeout: float = 60.0) -> float:
        """The time of the first report of ``kind`` (with ``seq``) not yet returned."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for index, (k, stamp, s) in enumerate(self.lines):
                    if k == kind and (seq is None or s == seq):
                        del self.lines[index]
                        return stamp
                if not self.changed.wait(max(0.0, deadline - time.monotonic())):
                    raise TimeoutError(f"no {kind} {seq} report")

    def count(self, kind: str) -> int:
        with self.changed:
            return sum(1 for k, _s, _q in self.lines if k == kind)

    def rss_mib(self) -> float:
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(10)


class EtcdctlWatch:
    """``etcdctl watch --prefix -w json``: the time each revision reached etcd's own Go client."""

    def __init__(self, etcd: EtcdServer) -> None:
        argv = ["etcdctl", f"--endpoints={etcd.endpoint}", "watch", "--prefix", PREFIX, "-w", "json"]
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


@contextmanager
def session(keys: int, value_size: int, subdirs: int) -> Iterator[tuple[EtcdServer, Dispenser, float]]:
    """etcd with ``keys`` keys, and a dispenser that projected them; yields (etcd, dispenser, start s)."""
    with (
        tempfile.TemporaryDirectory(prefix="dispenser-bench-") as work,
        EtcdServer(Path(work) / "etcd", ["--quota-backend-bytes=8589934592"]).running() as etcd,
    ):
        fill(etcd, keys, value_size, subdirs)
        dispenser = Dispenser(etcd, Path(work))
        started = dispenser.wait("start") - dispenser.started_at
        try:
            yield etcd, dispenser, started
        finally:
            dispenser.stop()


def fill(etcd: EtcdServer, keys: int, value_size: int, subdirs: int) -> None:
    value = b"v" * value_size
    names = [f"{PREFIX}d{i % subdirs}/k{i}" if subdirs else f"{PREFIX}k{i}" for i in range(keys)]
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


def latency(
    keys: int, rounds: int, with_etcdctl: bool, value_size: int = 64, subdirs: int = 0
) -> dict[str, float]:
    with session(keys, value_size, subdirs) as (etcd, dispenser, started):
        watch = EtcdctlWatch(etcd) if with_etcdctl else None
        ours: list[float] = []
        theirs: list[float] = []
        try:
            with etcd.client() as client:
                for n in range(rounds):
                    pairs = [(PREFIX + "seq", str(n))]
                    if with_etcdctl:
                        pairs.append((f"{PREFIX}pair", str(n)))
                    before = time.time()
                    revision = commit(client, pairs)
                    ours.append(dispenser.wait("hup", str(n)) - before)
                    if watch is not None:
                        theirs.append(watch.wait(revision) - before)
            rss = dispenser.rss_mib()
            disk = du_mib(dispenser.target)
        finally:
            if watch is not None:
                watch.stop()
    result = {
        "keys": keys,
        "start_s": started,
        "p50": percentile(ours, 50),
        "p99": percentile(ours, 99),
        "rss_mib": rss,
        "disk_mib": disk,
    }
    if theirs:
        result |= {"etcdctl_p50": percentile(theirs, 50), "etcdctl_p99": percentile(theirs, 99)}
    return result


def du_mib(path: Path) -> float:
    # a generation may be collected while du walks it: its complaint does not matter, its total does
    done = subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True, check=False)
    return int(done.stdout.split()[0]) / 1024


def burst(keys: int = 100, puts: int = 200) -> dict[str, float]:
    with session(keys, 64, 0) as (etcd, dispenser, _started):
        with etcd.client() as client:
            for n in range(puts):
                client.put(PREFIX + "seq", str(n))
            last = time.time()
        final = str(puts - 1)
        while (dispenser.target / "seq").read_text() != final:
            time.sleep(0.001)
        settled = time.time() - last
        time.sleep(1.0)  # let any further signal arrive before counting
        return {"puts": puts, "signals": dispenser.count("hup"), "settled_s": settled}


def row(*cells: object) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def table(*headers: str) -> list[str]:
    return [row(*headers), row(*["---"] * len(headers))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and no 50,000-key run")
    parser.add_argument("--output", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    rounds = 40 if args.quick else 200
    when = f"Run on {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, by `scripts/bench.py`."
    lines = ["# Benchmarks", "", when, ""]

    lines += ["## 1. Commit-to-signal latency, 2-key transactions (ms)", ""]
    lines += table("keys", "ours p50", "ours p99", "etcdctl p50", "etcdctl p99", "ratio p50", "ratio p99")
    for keys in (100, 1000):
        r = latency(keys, rounds, with_etcdctl=True)
        ratio50, ratio99 = r["p50"] / r["etcdctl_p50"], r["p99"] / r["etcdctl_p99"]
        cells = (ms(r["p50"]), ms(r["p99"]), ms(r["etcdctl_p50"]), ms(r["etcdctl_p99"]))
        lines.append(row(keys, *cells, f"{ratio50:.2f}", f"{ratio99:.2f}"))
        print(lines[-1], flush=True)

    lines += ["", "## 2. Scale: 10,000 keys of 2 KiB in 100 subdirectories", ""]
    r = latency(10_000, rounds // 4, with_etcdctl=False, value_size=2048, subdirs=100)
    lines += table("start to child running", "update p50", "update p99", "RSS", "disk")
    lines.append(
        row(
            f"{r['start_s']:.2f} s",
            f"{ms(r['p50'])} ms",
            f"{ms(r['p99'])} ms",
            mib(r["rss_mib"]),
            mib(r["disk_mib"]),
        )
    )
    print(lines[-1], flush=True)

    lines += ["", "## 3. Cost growth: one-key update (values of 64 bytes, 100 subdirectories)", ""]
    lines += table("keys", "start", "update p50", "update p99", "RSS")
    growth = []
    for keys in (100, 1000, 10_000) if args.quick else (100, 1000, 10_000, 50_000):
        r = latency(keys, rounds // 4, with_etcdctl=False, subdirs=100)
        growth.append(r)
        lines.append(
            row(keys, f"{r['start_s']:.2f} s", f"{ms(r['p50'])} ms", f"{ms(r['p99'])} ms", mib(r["rss_mib"]))
        )
        print(lines[-1], flush=True)

    lines += ["", "## 4. Burst: single-key puts as fast as possible", ""]
    b = burst()
    lines += table("puts", "signals", "files equal etcd after the last put")
    lines.append(row(f"{b['puts']:.0f}", f"{b['signals']:.0f}", f"{ms(b['settled_s'])} ms"))
    print(lines[-1], flush=True)

    args.output.mkdir(exist_ok=True)
    write_results(args.output / "benchmarks.md", lines)
    plot(growth, args.output / "benchmarks.png")
    print("\n".join(lines))


def write_results(path: Path, lines: list[str]) -> None:
    """Replace the results between the markers, keeping what the file says around them (the history
    of optimisations); a new file holds only the results."""
    results = f"{BEGIN}\n" + "\n".join(lines) + f"\n{END}"
    text = path.read_text() if path.exists() else f"{BEGIN}\n{END}\n"
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    path.write_text(head + results + tail)


def mib(value: float) -> str:
    return f"{value:.0f} MiB"


def plot(growth: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [r["keys"] for r in growth]
    figure, axis = plt.subplots(figsize=(6, 4))
    axis.plot(keys, [r["p50"] * 1000 for r in growth], marker="o", label="update p50")
    axis.plot(keys, [r["p99"] * 1000 for r in growth], marker="o", label="update p99")
    axis.set_xscale("log")
    axis.set_xlabel("keys projected")
    axis.set_ylabel("commit to signal (ms)")
    axis.set_title("Cost of a one-key change against the size of the projection")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
