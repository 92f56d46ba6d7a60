#!/usr/bin/env python3
"""Benchmark: how fast a committed etcd transaction becomes files on disk plus a signal in the child.

Starts throwaway etcd processes, runs the installed ``etcd-config-dispenser`` as real processes in front
of a small child, and prints tables; also writes them to docs/benchmarks.md and plots latency against
the number of keys to docs/benchmarks.png. Figures:

1. commit-to-signal latency for 2-key transactions with 100 and 1,000 keys projected, each tool paired
   with ``etcdctl watch`` (etcd's own Go client) seeing the same revision: ours, ours through
   ``etcd grpc-proxy``, and the original Go tool when ``--original PATH`` is given;
2. the watch call: commit to response on our own thread for the three ways grpc can make it;
3. scale: 10,000 keys of 2 KiB in 100 subdirectories: start-to-child time, one-key update latency,
   resident memory, disk used;
4. cost growth: one-key update latency, start and memory at 100 to 100,000 keys of a flat prefix, side by
   side with the original when given, and the median of 7 starts of each at 50,000 keys, taking turns;
5. burst: 200 single-key puts as fast as possible: signals sent, time until the files equal etcd,
   and the same with ``--wait=200ms``;
6. fleets: 100 dispensers on one prefix, directly and through ``etcd grpc-proxy``: commit to the last
   one signalled, etcd's CPU time, resident memory per dispenser, watchers etcd holds;
7. start and resident memory at 100 keys: the installed package with and without ``--metrics-address``,
   the one-directory binary of scripts/build-binary, and the original; and the floor: what the named
   dependencies take, imported by an interpreter that does nothing else;
8. what one freshness check costs etcd (and the proxy);
9. what the start-grace check costs per signal;
10. two prefixes beside one; 11. templates beside none;
12. what each kind of request the check could make costs etcd (and the proxy), at 100 to 50,000 keys.

Usage: .venv/bin/python scripts/bench.py [--quick] [--original PATH] [--ours PATH]   (etcd, etcdctl on PATH)
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import timeit
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import bench_tools
import grpc
from bench_tools import (
    PREFIX,
    ROOT,
    SECOND,
    EtcdctlWatch,
    Projector,
    Reports,
    commit,
    cpu_seconds,
    du_mib,
    etcd_metric,
    etcd_with,
    floor_mib,
    ours,
)
from etcd_server import EtcdServer, GrpcProxy, free_port
from pyetcd import etcdrpc

from projector import dispositions, watchcall
from projector.connection import prefix_end

BEGIN, END = "<!-- results: written by scripts/bench.py -->", "<!-- end of results -->"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def ms(seconds: float, digits: int = 1) -> str:
    return f"{seconds * 1000:.{digits}f}"


def mib(value: float) -> str:
    return f"{value:.0f} MiB"


def row(*cells: object) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def table(*headers: str) -> list[str]:
    return [row(*headers), row(*["---"] * len(headers))]


@contextmanager
def session(
    program: list[str],
    keys: int,
    value_size: int = 64,
    subdirs: int = 0,
    proxy: bool = False,
    flags: tuple[str, ...] = (),
    spread: bool = False,
) -> Iterator[tuple[EtcdServer, str, Projector, Reports, float]]:
    """etcd with ``keys`` keys (behind a grpc-proxy if asked; ``spread`` over two prefixes, both
    projected) and one projector that projected them; yields (etcd, the endpoint the projector uses,
    projector, its reports, seconds from start to child)."""
    flags += (f"--prefix={SECOND}",) if spread else ()
    with sandbox("dispenser-bench-", keys, value_size, subdirs, proxy, spread) as (work, etcd, endpoint):
        reports = Reports(work / "reports.fifo")
        projector = Projector(program, endpoint, work / "target", reports, flags=flags)
        started = reports.take("start", None)[0] - projector.started_at
        try:
            yield etcd, endpoint, projector, reports, started
        finally:
            projector.stop()


@contextmanager
def sandbox(
    prefix: str, keys: int, value_size: int, subdirs: int, proxy: bool, spread: bool = False
) -> Iterator[tuple[Path, EtcdServer, str]]:
    """A work directory, an etcd holding ``keys`` keys in it, and the endpoint to use: etcd's own, or
    that of a grpc-proxy in front of it."""
    with bench_tools.workspace(prefix) as work, etcd_with(keys, value_size, subdirs, work, spread) as etcd:
        if not proxy:
            yield work, etcd, etcd.endpoint
            return
        with GrpcProxy(etcd, work / "proxy").running() as running:
            yield work, etcd, running.endpoints


def latency(
    program: list[str],
    keys: int,
    rounds: int,
    paired: bool,
    value_size: int = 64,
    subdirs: int = 0,
    proxy: bool = False,
    warm_up: int = 0,
    spread: bool = False,
    templates: int = 0,
) -> dict[str, float]:
    """Commit-to-signal of 2-key (paired with etcdctl) or 1-key transactions; ``spread``: the keys over
    two prefixes, and a 2-key transaction touches both; ``templates``: that many templates rendered
    beside the keys, one of which reads the key every transaction changes."""
    with bench_tools.workspace("dispenser-templates-") as sources:
        flags = template_flags(sources, templates)
        opened = session(program, keys, value_size, subdirs, proxy, flags=flags, spread=spread)
        with opened as (etcd, endpoint, projector, reports, started):
            return _measured(
                etcd, endpoint, projector, reports, started, keys, rounds, paired, warm_up, spread
            )


def template_flags(directory: Path, count: int) -> tuple[str, ...]:
    """``count`` templates, each reading one key (the first, the key every transaction changes)."""
    for n in range(count):
        key = "seq" if n == 0 else f"k{n}"
        (directory / f"{n}.j2").write_text("{{ keys['" + key + "'] }}\n")
    return tuple(f"--template={directory / f'{n}.j2'}=rendered/{n}.conf" for n in range(count))


def _measured(
    etcd: EtcdServer,
    endpoint: str,
    projector: Projector,
    reports: Reports,
    started: float,
    keys: int,
    rounds: int,
    paired: bool,
    warm_up: int,
    spread: bool,
) -> dict[str, float]:
    """The transactions of one session, timed from commit to signal."""
    watch = EtcdctlWatch(endpoint) if paired else None
    ours_: list[float] = []
    theirs: list[float] = []
    try:
        with etcd.client() as client:
            for n in range(-warm_up, rounds):
                pairs = [(PREFIX + "seq", str(n))]
                if paired:
                    pairs.append((f"{SECOND if spread else PREFIX}pair", str(n)))
                before = time.time()
                revision = commit(client, pairs)
                took = reports.take("hup", str(n))[0] - before
                if n < 0:
                    continue
                ours_.append(took)
                if watch is not None:
                    theirs.append(watch.wait(revision) - before)
        rss = projector.rss_mib()
        disk = du_mib(projector.target)
    finally:
        if watch is not None:
            watch.stop()
    result = {
        "keys": keys,
        "start_s": started,
        "p50": percentile(ours_, 50),
        "p99": percentile(ours_, 99),
        "rss_mib": rss,
        "disk_mib": disk,
    }
    if theirs:
        result |= {"etcdctl_p50": percentile(theirs, 50), "etcdctl_p99": percentile(theirs, 99)}
    return result


def starts(programs: dict[str, list[str]], keys: int, runs: int) -> dict[str, float]:
    """Start to the child running: the median of ``runs`` starts of each program on one etcd, the programs
    taking turns (one start's cost varies by a third from run to run on this machine kind)."""
    taken: dict[str, list[float]] = {label: [] for label in programs}
    with sandbox("dispenser-starts-", keys, 64, 0, False) as (work, _etcd, endpoint):
        for run in range(runs):
            for index, (label, program) in enumerate(programs.items()):
                reports = Reports(work / f"reports-{run}-{index}.fifo")
                target = work / f"target-{run}-{index}"
                projector = Projector(program, endpoint, target, reports)
                try:
                    taken[label].append(reports.take("start", None)[0] - projector.started_at)
                finally:
                    projector.stop()
                    shutil.rmtree(target)
    return {label: statistics.median(times) for label, times in taken.items()}


def burst(keys: int = 100, puts: int = 200, flags: tuple[str, ...] = ()) -> dict[str, float]:
    with session(ours(), keys, flags=flags) as (etcd, _endpoint, projector, reports, _started):
        with etcd.client() as client:
            for n in range(puts):
                client.put(PREFIX + "seq", str(n))
            last = time.time()
        final = str(puts - 1)
        while (projector.target / "seq").read_text() != final:
            time.sleep(0.001)
        settled = time.time() - last
        time.sleep(1.0)  # let any further signal arrive before counting
        return {"puts": puts, "signals": reports.count("hup"), "settled_s": settled}


def watch_calls(rounds: int, repeats: int) -> dict[str, list[float]]:
    """Commit to a watch response on the reading thread, for each way of making the call (medians of
    ``rounds`` puts, interleaved ``repeats`` times)."""
    kinds: dict[str, Callable[[grpc.Channel, Any], Any]] = {
        "unary-stream, single-threaded (half-closes: no proxy)": _unary_stream,
        "stream-stream, public API (a channel thread)": lambda ch, req: watchcall._threaded_call(ch, req, ()),
        "bidirectional, single-threaded (ours)": lambda ch, req: watchcall.open_watch(ch, req, ()),
    }
    found: dict[str, list[float]] = {kind: [] for kind in kinds}
    with bench_tools.workspace("watch-calls-") as work, EtcdServer(work / "etcd").running() as etcd:
        for _ in range(repeats):
            for kind, call in kinds.items():
                found[kind].append(_watch_call(etcd, call, rounds))
    return found


def _unary_stream(channel: grpc.Channel, request: Any) -> Any:
    watch = channel.unary_stream(
        watchcall.METHOD,
        request_serializer=etcdrpc.WatchRequest.SerializeToString,
        response_deserializer=etcdrpc.WatchResponse.FromString,
    )
    return watch(request)


def _watch_call(etcd: EtcdServer, call: Callable[[grpc.Channel, Any], Any], rounds: int) -> float:
    option = (grpc.experimental.ChannelOptions.SingleThreadedUnaryStream, 1)
    channel = grpc.insecure_channel(f"127.0.0.1:{etcd.member.client_port}", options=[option])
    kv = etcdrpc.KVStub(grpc.insecure_channel(f"127.0.0.1:{etcd.member.client_port}"))
    create = etcdrpc.WatchCreateRequest(key=PREFIX.encode(), range_end=b"/bench0")
    stream = call(channel, etcdrpc.WatchRequest(create_request=create))
    assert next(stream).created
    took = []
    for n in range(rounds):
        before = time.perf_counter()
        kv.Put(etcdrpc.PutRequest(key=f"{PREFIX}x".encode(), value=str(n).encode()))
        next(stream)
        took.append(time.perf_counter() - before)
    stream.cancel()
    channel.close()
    return statistics.median(took)


def fleet(count: int, rounds: int, proxy: bool) -> dict[str, float]:
    """``count`` dispensers with children on one prefix of 100 keys; 2-key transactions. The freshness
    checks are left out here (``check_cost`` measures them): their CPU would drown that of a change.
    CPU time is counted in clock ticks (10 ms): a few ms per change need the rounds."""
    with sandbox("dispenser-fleet-", 100, 64, 0, proxy) as (work, etcd, endpoint):
        reports = Reports(work / "reports.fifo")
        flags = ("--confirm-interval=1h",)
        fleet_ = [Projector(ours(), endpoint, work / f"t{i}", reports, str(i), flags) for i in range(count)]
        try:
            reports.take("start", None, count, timeout=600)
            time.sleep(2)  # let every watch be created
            rss = statistics.mean(p.rss_mib() for p in fleet_)
            watchers = etcd_metric(etcd.member.client_port, "etcd_debugging_mvcc_watcher_total")
            pids = _busy(etcd, endpoint if proxy else None)
            last: list[float] = []
            cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
            with etcd.client() as client:
                for n in range(rounds):
                    before = time.time()
                    commit(client, [(PREFIX + "seq", str(n)), (PREFIX + "pair", str(n))])
                    last.append(max(reports.take("hup", str(n), count)) - before)
                    time.sleep(0.2)
            spent = {name: cpu_seconds(pid) - cpu[name] for name, pid in pids.items()}
        finally:
            stoppers = [threading.Thread(target=p.stop) for p in fleet_]
            for thread in stoppers:
                thread.start()
            for thread in stoppers:
                thread.join()
    return {
        "p50": percentile(last, 50),
        "p99": percentile(last, 99),
        "etcd_per_change": spent["etcd"] / rounds,
        "proxy_per_change": spent.get("proxy", 0.0) / rounds,
        "rss_mib": rss,
        "watchers": watchers,
    }


def check_cost(keys: int, value_size: int, proxy: bool, written_elsewhere: bool) -> dict[str, float]:
    """CPU that one freshness check costs etcd (and the proxy): one dispenser checking every 100 ms,
    against the same dispenser checking once an hour, each measured over 10 s once settled.
    ``written_elsewhere``: a key outside the prefix is put every 50 ms all along, so that each check
    finds etcd's revision moved and reads the prefix in full (its writes cost both runs the same)."""
    with (
        sandbox("dispenser-checks-", keys, value_size, 100, proxy) as (work, etcd, endpoint),
        _writing_elsewhere(etcd, written_elsewhere),
    ):
        pids = _busy(etcd, endpoint if proxy else None)
        rates = {}
        for interval in ("1h", "100ms"):
            reports = Reports(work / f"reports-{interval}.fifo")
            flags = (f"--confirm-interval={interval}",)
            projector = Projector(ours(), endpoint, work / f"target-{interval}", reports, flags=flags)
            try:
                reports.take("start", None, timeout=120)
                time.sleep(2)
                rates[interval] = {name: _cpu_rate(pid, 10.0) for name, pid in pids.items()}
            finally:
                projector.stop()
    return {name: (rates["100ms"][name] - rates["1h"][name]) / 10 for name in pids}  # 10 checks a second


@contextmanager
def _writing_elsewhere(etcd: EtcdServer, writing: bool) -> Iterator[None]:
    """A put outside every projected prefix each 50 ms while the block runs, if ``writing``."""
    stop = threading.Event()

    def write() -> None:
        with etcd.client() as client:
            while not stop.wait(0.05):
                client.put("/elsewhere", "x")

    writer = threading.Thread(target=write, daemon=True)
    if writing:
        writer.start()
    try:
        yield
    finally:
        stop.set()
        if writing:
            writer.join()


def request_costs(keys: int, proxy: bool) -> dict[str, dict[str, float]]:
    """CPU per request of each kind over the prefix (or one key in it), sent back to back on one
    channel: the kinds a freshness check could be made of, and a watch opened from the current
    revision and cancelled (the cost of a probe that finds nothing to replay)."""
    prefix = PREFIX.encode()
    end = prefix_end(prefix)
    R = etcdrpc.RangeRequest
    ranges = {
        "range, keys only, newest modification first, limit 1 (the check's full reading)": R(
            key=prefix, range_end=end, keys_only=True, limit=1, sort_order=R.DESCEND, sort_target=R.MOD
        ),
        "range, count only": R(key=prefix, range_end=end, count_only=True),
        "range, keys only, limit 1": R(key=prefix, range_end=end, keys_only=True, limit=1),
        "one key, linearizable": R(key=prefix + b"0", keys_only=True),
        "one key, serializable": R(key=prefix + b"0", keys_only=True, serializable=True),
    }
    with sandbox("dispenser-requests-", keys, 2048, 0, proxy) as (_work, etcd, endpoint):
        pids = _busy(etcd, endpoint if proxy else None)
        with grpc.insecure_channel(endpoint.split(",")[0].split("//")[-1]) as channel:
            kv = etcdrpc.KVStub(channel)
            costs = {}
            for name, request in ranges.items():
                count = 2000 if keys <= 100 or "limit 1" in name or "one key" in name else 300
                costs[name] = _cpu_per(pids, count, functools.partial(kv.Range, request))
            revision = kv.Range(ranges["one key, linearizable"]).header.revision
            probe = functools.partial(_probe_watch, etcdrpc.WatchStub(channel), prefix, end, revision + 1)
            costs["watch from the current revision, created and cancelled"] = _cpu_per(pids, 1000, probe)
    return costs


def _cpu_per(pids: dict[str, int], count: int, call: Callable[[], Any]) -> dict[str, float]:
    """CPU seconds per call of each process in ``pids`` (after 20 calls to warm up)."""
    for _ in range(20):
        call()
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    for _ in range(count):
        call()
    return {name: (cpu_seconds(pid) - before[name]) / count for name, pid in pids.items()}


def _probe_watch(stub: Any, key: bytes, end: bytes, start: int) -> None:
    """One watch on its own stream: created, then cancelled."""
    created = threading.Event()
    requests: list[Any] = [
        etcdrpc.WatchRequest(
            create_request=etcdrpc.WatchCreateRequest(key=key, range_end=end, start_revision=start)
        )
    ]

    def send() -> Iterator[Any]:
        yield requests[0]
        created.wait()
        yield etcdrpc.WatchRequest(cancel_request=etcdrpc.WatchCancelRequest(watch_id=requests[1]))

    try:
        for response in stub.Watch(send()):
            if response.created:
                requests.append(response.watch_id)
                created.set()
            if response.canceled:
                return
    except grpc.RpcError:
        if not created.is_set():
            raise  # else: the proxy ends the stream, not the watch, once the cancel closes our side


def _busy(etcd: EtcdServer, proxy: str | None) -> dict[str, int]:
    """The processes whose CPU time is measured: etcd, and the proxy if there is one."""
    assert etcd.member.process is not None
    return {"etcd": etcd.member.process.pid} | ({"proxy": _proxy_pid(proxy)} if proxy else {})


def _cpu_rate(pid: int, seconds: float) -> float:
    """CPU seconds per second the process uses over the next ``seconds``."""
    before = cpu_seconds(pid)
    time.sleep(seconds)
    return (cpu_seconds(pid) - before) / seconds


def _proxy_pid(endpoint: str) -> int:
    port = endpoint.rsplit(":", 1)[1]
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"grpc-proxy" in cmdline and f"--listen-addr=127.0.0.1:{port}".encode() in cmdline:
                return int(pid)
    raise RuntimeError("no grpc-proxy process")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, no 50,000-key run, a fleet of 20")
    parser.add_argument("--original", type=Path, help="the original Go tool's binary, measured side by side")
    parser.add_argument("--output", type=Path, default=ROOT / "docs")
    parser.add_argument("--dir", type=Path, default=bench_tools.WORK, help="for etcd's data and the targets")
    parser.add_argument("--ours", default=bench_tools.OURS, help="the etcd-config-dispenser to measure")
    parser.add_argument(
        "--binary",
        type=Path,
        default=ROOT / "dist" / "etcd-config-dispenser" / "etcd-config-dispenser",
        help="the binary of scripts/build-binary, measured beside the installed package if it exists",
    )
    args = parser.parse_args()
    bench_tools.WORK, bench_tools.OURS = args.dir, args.ours
    rounds = 40 if args.quick else 200
    when = (
        f"Run on {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, by `scripts/bench.py`; etcd's data and "
        f"the targets in {args.dir}."
    )
    lines = ["# Benchmarks", "", when, ""]

    def emit(line: str) -> None:
        lines.append(line)
        print(line, flush=True)

    lines += ["## 1. Commit-to-signal latency, 2-key transactions (ms), each paired with etcdctl", ""]
    lines += table("keys", "tool", "p50", "p99", "etcdctl p50", "etcdctl p99", "ratio p50", "ratio p99")
    tools = [("ours", ours(), False), ("ours through grpc-proxy", ours(), True)]
    if args.original:
        tools.append(("original (Go)", [str(args.original)], False))
    for keys in (100, 1000):
        for label, program, proxy in tools:
            r = latency(program, keys, rounds, paired=True, proxy=proxy)
            ratio50, ratio99 = r["p50"] / r["etcdctl_p50"], r["p99"] / r["etcdctl_p99"]
            cells = (ms(r["p50"], 2), ms(r["p99"], 2), ms(r["etcdctl_p50"], 2), ms(r["etcdctl_p99"], 2))
            emit(row(keys, label, *cells, f"{ratio50:.2f}", f"{ratio99:.2f}"))

    lines += ["", "## 2. The watch call: commit to response on the reading thread (ms, medians)", ""]
    lines += table("call", "runs", "median of runs")
    for kind, medians in watch_calls(500 if not args.quick else 100, 6 if not args.quick else 2).items():
        emit(row(kind, " ".join(ms(m, 2) for m in medians), ms(statistics.median(medians), 2)))

    lines += ["", "## 3. Scale: 10,000 keys of 2 KiB in 100 subdirectories", ""]
    r = latency(ours(), 10_000, rounds // 4, paired=False, value_size=2048, subdirs=100)
    lines += table("start to child running", "update p50", "update p99", "RSS", "disk")
    cells = (f"{r['start_s']:.2f} s", f"{ms(r['p50'])} ms", f"{ms(r['p99'])} ms", mib(r["rss_mib"]))
    emit(row(*cells, mib(r["disk_mib"])))

    lines += [
        "",
        "## 4. Cost growth: one-key update after a warm-up of 10 changes (flat prefix, values of 64 bytes)",
        "",
    ]
    lines += table(
        "keys", "tool", "start to child running", "update p50", "update p99", "RSS", "ours / original"
    )
    growth: dict[str, list[dict[str, float]]] = {}
    for keys in (100, 1000, 10_000) if args.quick else (100, 1000, 10_000, 50_000, 100_000):
        for label, program in [("ours", ours())] + (
            [("original", [str(args.original)])] if args.original else []
        ):
            r = latency(program, keys, rounds // 4, paired=False, warm_up=10)
            growth.setdefault(label, []).append(r)
            mine = growth["ours"][-1]
            compared = (
                f"{mine['p50'] / r['p50']:.2f} at p50, {mine['p99'] / r['p99']:.2f} at p99"
                if label != "ours"
                else ""
            )
            cells = (
                f"{r['start_s']:.2f} s",
                f"{ms(r['p50'], 2)} ms",
                f"{ms(r['p99'], 2)} ms",
                mib(r["rss_mib"]),
            )
            emit(row(keys, label, *cells, compared))

    if args.original and not args.quick:
        runs = 7
        title = f"Start to the child running at 50,000 keys, the median of {runs} starts each, taking turns:"
        lines += ["", title, ""]
        lines += table("ours", "original", "ours / original")
        s = starts({"ours": ours(), "original": [str(args.original)]}, 50_000, runs)
        emit(row(f"{s['ours']:.2f} s", f"{s['original']:.2f} s", f"{s['ours'] / s['original']:.2f}"))

    lines += ["", "## 5. Burst: single-key puts as fast as possible", ""]
    lines += table("flags", "puts", "signals", "files equal etcd after the last put")
    for flags in ((), ("--wait=200ms",)):
        b = burst(flags=flags)
        cells = (f"{b['puts']:.0f}", f"{b['signals']:.0f}", f"{ms(b['settled_s'])} ms")
        emit(row(" ".join(flags) or "(none)", *cells))

    count = 20 if args.quick else 100
    lines += ["", f"## 6. Fleets: {count} dispensers on one prefix of 100 keys, 2-key transactions", ""]
    lines += table(
        "path",
        "commit to last signal p50",
        "p99",
        "etcd CPU per change",
        "proxy CPU per change",
        "RSS per dispenser",
        "watchers in etcd",
    )
    for label, proxy in (("direct", False), ("through grpc-proxy", True)):
        f = fleet(count, 20 if args.quick else 50, proxy)
        cpu = (f"{f['etcd_per_change'] * 1000:.1f} ms", f"{f['proxy_per_change'] * 1000:.1f} ms")
        latencies = (f"{ms(f['p50'])} ms", f"{ms(f['p99'])} ms")
        emit(row(label, *latencies, *cpu, mib(f["rss_mib"]), f"{f['watchers']:.0f}"))

    lines += ["", "## 7. Start and resident memory at 100 keys", ""]
    lines += table("tool", "start to child running", "RSS")
    tools = [
        ("ours (the installed package)", ours(), ()),
        ("ours with --metrics-address", ours(), (f"--metrics-address=127.0.0.1:{free_port()}",)),
    ]
    if args.binary.exists():
        tools.append(("ours as the one-directory binary (scripts/build-binary)", [str(args.binary)], ()))
    for label, program, flags in tools + ([("original", [str(args.original)], ())] if args.original else []):
        with session(program, 100, flags=flags) as (_etcd, _endpoint, projector, _reports, started):
            time.sleep(1)
            emit(row(label, f"{started:.2f} s", mib(projector.rss_mib())))
    floor = "floor: the named dependencies imported (pyetcd, pydantic-settings), nothing else"
    emit(row(floor, "", mib(floor_mib())))

    lines += ["", "## 8. What one freshness check costs (CPU time, one dispenser checking every 100 ms)", ""]
    lines += table("keys under the prefix", "path", "etcd", "proxy", "etcd, written elsewhere", "proxy, w.e.")
    sizes = ((100, 64), (10_000, 2048)) if args.quick else ((100, 64), (10_000, 2048), (50_000, 2048))
    for keys, size in sizes:
        for label, proxy in (("direct", False), ("through grpc-proxy", True)):
            quiet, written = (
                check_cost(keys, size, proxy, written_elsewhere) for written_elsewhere in (False, True)
            )
            costs = [
                f"{c.get(name, 0) * 1000:.2f} ms" for c in (quiet, written) for name in ("etcd", "proxy")
            ]
            emit(row(keys, label, *costs))

    lines += ["", "## 9. What the start-grace check costs per signal (us, the median of 5 x 2,000 reads)", ""]
    lines += table("the command", "signal", "what is read", "per signal")
    for label, signum, what, cost in disposition_costs():
        emit(row(label, signum, what, f"{cost * 1e6:.1f} us"))

    lines += ["", "## 10. Several prefixes: two beside one, in alternating runs (ms)", ""]
    lines += table("keys", "prefixes", "transaction", "p50", "p99", "two / one at p50")
    for keys, paired in ((100, True), (10_000 if args.quick else 50_000, False)):
        what = "2 keys, one in each prefix" if paired else "1 key"
        one: list[float] = []
        for _run in range(3):
            for spread in (False, True):
                r = latency(ours(), keys, rounds // (1 if paired else 4), paired, warm_up=10, spread=spread)
                if not spread:
                    one.append(r["p50"])
                ratio = f"{r['p50'] / one[-1]:.2f}" if spread else ""
                emit(row(keys, 2 if spread else 1, what, ms(r["p50"], 2), ms(r["p99"], 2), ratio))

    lines += ["", "## 11. Templates beside none, in alternating runs (ms)", ""]
    lines += table("keys", "templates", "transaction", "p50", "p99", "with / without at p50")
    for keys, count, paired in ((100, 10, True), (10_000 if args.quick else 50_000, 1000, False)):
        what = "2 keys, one read by a template" if paired else "1 key, read by one template"
        without: list[float] = []
        for _run in range(3):
            for templates in (0, count):
                r = latency(
                    ours(), keys, rounds // (1 if paired else 4), paired, warm_up=10, templates=templates
                )
                if not templates:
                    without.append(r["p50"])
                ratio = f"{r['p50'] / without[-1]:.2f}" if templates else ""
                emit(row(keys, templates, what, ms(r["p50"], 2), ms(r["p99"], 2), ratio))

    lines += ["", "## 12. What each request a check could make costs etcd (CPU time per request)", ""]
    lines += table("keys of 2 KiB", "path", "request", "etcd", "proxy")
    for keys in (100, 10_000) if args.quick else (100, 10_000, 50_000):
        for label, proxy in (("direct", False), ("through grpc-proxy", True)):
            for request, cost in request_costs(keys, proxy).items():
                emit(
                    row(
                        keys,
                        label,
                        request,
                        f"{cost['etcd'] * 1000:.2f} ms",
                        f"{cost.get('proxy', 0) * 1000:.2f} ms",
                    )
                )

    args.output.mkdir(exist_ok=True)
    write_results(args.output / "benchmarks.md", lines)
    plot(growth, args.output / "benchmarks.png")


def disposition_costs() -> list[tuple[str, str, str, float]]:
    """What ``dispositions.takes`` costs before each signal, for a command that catches SIGHUP (nginx's
    case: one read of /proc/<pid>/stat), one that waits in sigwaitinfo (the benchmark's and the tests'
    children: stat, then the threads' wchan), and a real-time signal (/proc/<pid>/status)."""
    commands = {
        "catches it (trap)": ["sh", "-c", "trap : HUP USR1 35; while :; do sleep 1; done"],
        "waits in sigwaitinfo": [sys.executable, "-c", "import signal; signal.sigwaitinfo({signal.SIGHUP})"],
    }
    cases = [
        ("catches it (trap)", signal.SIGHUP, "SIGHUP", "stat"),
        ("waits in sigwaitinfo", signal.SIGHUP, "SIGHUP", "stat, task list, wchan"),
        ("catches it (trap)", signal.SIGRTMIN + 1, "SIGRTMIN+1", "status"),
    ]
    processes = {label: subprocess.Popen(argv) for label, argv in commands.items()}
    try:
        time.sleep(0.5)  # set up
        costs = []
        for label, signum, name, what in cases:
            pid = processes[label].pid
            assert dispositions.takes(pid, signum), label
            read = functools.partial(dispositions.takes, pid, signum)
            runs = [timeit.timeit(read, number=2000) / 2000 for _ in range(5)]
            costs.append((label, name, what, statistics.median(runs)))
        return costs
    finally:
        for process in processes.values():
            process.kill()
            process.wait()


def write_results(path: Path, lines: list[str]) -> None:
    """Replace the results between the markers, keeping what the file says around them (the history
    of optimisations); a new file holds only the results."""
    results = f"{BEGIN}\n" + "\n".join(lines) + f"\n{END}"
    text = path.read_text() if path.exists() else f"{BEGIN}\n{END}\n"
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    path.write_text(head + results + tail)


def plot(growth: dict[str, list[dict[str, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    for label, results in growth.items():
        keys = [r["keys"] for r in results]
        axis.plot(keys, [r["p50"] * 1000 for r in results], marker="o", label=f"{label}: update p50")
        axis.plot(keys, [r["p99"] * 1000 for r in results], marker="o", linestyle="--", label=f"{label}: p99")
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
