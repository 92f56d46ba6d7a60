"""A nemesis, as etcd's robustness suite and Jepsen test: random transactions under a random schedule
of faults, every read of the targets checked against etcd's history afterwards.

A 3-member cluster and a gRPC proxy in front of it; two dispensers, one on the members, one through the
proxy, each with a child that reads the whole target on each signal; readers of both targets many
times a second; a writer whose every transaction's outcome is known (history.py); a nemesis killing,
freezing and partitioning members, compacting, killing the proxy and the dispensers (faults.py). Then,
healed: every read is one of etcd's states, never older than one its dispenser's targets already
showed, and both targets hold etcd's final state within 15 s. NEMESIS_SECONDS (default 60) and
NEMESIS_SEED (default: drawn, and printed) set the run; scripts/nemesis runs it long.
"""

from __future__ import annotations

import contextlib
import os
import random
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from etcd_auth import ALICE_PASSWORD, enable_auth
from etcd_server import EtcdCluster, GrpcProxy
from faults import FAULTS, Nemesis
from harness import Run, wait_for
from history import (
    Anomaly,
    History,
    Readers,
    Writer,
    check,
    check_records,
    fingerprint,
    read_target,
    staleness,
)
from partition import own_data_dir, partition_or_skip

SECONDS = float(os.environ.get("NEMESIS_SECONDS", "60"))
FIXED_SEED = 20261203


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[EtcdCluster]:
    partition_or_skip()
    members = EtcdCluster(tmp_path / "cluster")
    with own_data_dir(members.members[0]):
        yield members


@contextlib.contextmanager
def small_disks(runs: dict[str, Run]) -> Iterator[None]:
    """Each target in a tmpfs of its own (tmp_path/box), small enough to fill in a moment."""
    boxes = [run.target.parent for run in runs.values()]
    for box in boxes:
        box.mkdir(parents=True)
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(box)], capture_output=True
        )
        if mounted.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield
    finally:
        for box in boxes:
            subprocess.run(["umount", "-l", str(box)], capture_output=True)


def outlived(records: list[dict[str, Any]]) -> list[int]:
    """The children still running that are not the last one started (their dispenser was killed)."""
    started = [record["pid"] for record in records if record["event"] == "start"]
    alive = []
    for pid in set(started[:-1]) - set(started[-1:]):
        with contextlib.suppress(OSError):
            if b"child_recorder" in Path(f"/proc/{pid}/cmdline").read_bytes():
                alive.append(pid)
    return alive


@pytest.mark.parametrize("seeded", ["fixed", "random"])
def test_random_faults_under_random_transactions(tmp_path: Path, cluster: EtcdCluster, seeded: str) -> None:
    seed = int(
        os.environ.get("NEMESIS_SEED") or (FIXED_SEED if seeded == "fixed" else random.randrange(10**9))
    )
    print(f"\nNEMESIS seed={seed} (NEMESIS_SEED={seed} replays it)")
    runs = {"direct": Run(tmp_path / "direct", cluster), "proxied": Run(tmp_path / "proxied", cluster)}
    runs["direct"].prefixes = ["--prefix=/cfg/a=a", "--prefix=/cfg/b=b"]  # one projection of two prefixes
    proxy = GrpcProxy(cluster, tmp_path / "proxy")
    with cluster.running(), small_disks(runs):
        enable_auth(cluster)  # the dispensers are alice, who may read /cfg/ (etcd_auth.py)
        with proxy.running():
            writer, nemesis, readers, caught_up, late = run_under_faults(runs, cluster, proxy, seed)
        outlasting = {name: outlived(run.records_list()) for name, run in runs.items()}
        for run in runs.values():
            run.stop()
        leftovers = {
            name: [p.name for p in run.target.iterdir() if p.name.startswith("..data_tmp")]
            for name, run in runs.items()
        }
        outside = {
            name: sorted({p.name for p in run.target.parent.iterdir()} - {"target"})
            for name, run in runs.items()
        }
    history = writer.history
    anomalies, seen = check(history, readers.reads)
    anomalies += late
    for name, run in runs.items():
        anomalies += check_records(history, name, run.records_list())
        if outlasting[name]:
            anomalies.append(
                Anomaly(name, f"children {outlasting[name]} outlived the dispenser that started them")
            )
        if outside[name]:
            anomalies.append(Anomaly(name, f"written beside the target: {outside[name]}"))
        if leftovers[name]:
            anomalies.append(Anomaly(name, f"temporary entries left in the target: {leftovers[name]}"))
        if "Traceback" in run.log:
            anomalies.append(Anomaly(name, "a traceback in its log"))
    faults = {kind: sum(1 for _b, _e, k in nemesis.log if k == kind) for kind in FAULTS}
    stale_of = {name: staleness(history, reads) for name, reads in seen.items()}
    stale = staleness_by_fault(nemesis.log, [item for items in stale_of.values() for item in items])
    worst = max(stale, key=lambda kind: stale[kind][0], default="none")
    print(
        f"NEMESIS duration={SECONDS:.0f}s seed={seed} transactions={history.transactions}"
        f" (outcome resolved by the marker: {history.unknown}) faults={faults}"
        f" reads={len(readers.reads)} (a file gone mid-read: {readers.vanished})"
        f" anomalies={len(anomalies)} max-staleness={stale.get(worst, (0.0, 0.0))[0]:.1f}s under {worst!r}"
        f" caught-up={caught_up:.1f}s after the last heal"
    )
    for kind, (most, p99) in sorted(stale.items()):
        print(f"NEMESIS staleness under {kind!r}: max {most:.2f} s, p99 {p99:.2f} s")
    for name, items in sorted(stale_of.items()):  # which dispenser it was: the members', or the proxy's
        for most, p99 in staleness_by_fault([], items).values():  # (no faults: all of it under "none")
            print(f"NEMESIS staleness of {name!r}: max {most:.2f} s, p99 {p99:.2f} s")
    for anomaly in anomalies[:10]:
        print(f"ANOMALY {anomaly.who}: {anomaly.what}")
    if anomalies:
        print(history_around(history, nemesis.log, anomalies[0].at))
        print(anomalies[0].detail)
    assert not anomalies, f"seed {seed}: {len(anomalies)} anomalies, first: {anomalies[0]}"


def run_under_faults(
    runs: dict[str, Run], cluster: EtcdCluster, proxy: GrpcProxy, seed: int
) -> tuple[Writer, Nemesis, Readers, float, list[Anomaly]]:
    """The dispensers started, SECONDS of transactions under faults and readers, then healed: how long
    each target took to hold etcd's final state (an anomaly past 15 s)."""
    user = {"ETCD_USERNAME": "alice", "ETCD_PASSWORD": ALICE_PASSWORD}
    env = {
        "direct": runs["direct"].env(**user),
        "proxied": runs["proxied"].env(ETCD_ENDPOINTS=proxy.endpoints, **user),
    }

    def start(name: str) -> None:
        runs[name].start("--signal=SIGHUP", "--confirm-interval=1s", "--allow-empty", env=env[name])

    writer = Writer(cluster, seed)
    writer.start_state()
    for name in runs:
        start(name)
    readers = Readers({name: run.target for name, run in runs.items()})
    nemesis = Nemesis(cluster, proxy, runs, start, seed + 1)
    threads = [threading.Thread(target=writer.run), threading.Thread(target=nemesis.run)]
    try:
        for name in runs:
            wait_for(
                lambda name=name: (runs[name].target / "..data").is_symlink(),
                30,
                f"{name}'s first projection",
            )
        readers.start()
        for thread in threads:
            thread.start()
        writer.stopping.wait(SECONDS)  # set early only if the writer failed
    finally:
        nemesis.stopping.set()
        threads[1].join() if threads[1].is_alive() else None
        writer.stopping.set()
        threads[0].join() if threads[0].is_alive() else None
        writer.close()
    healed, late = time.time(), []
    try:
        if writer.failure is not None:  # every read after it would be an anomaly: say why instead
            raise AssertionError(f"the writer stopped: {writer.failure}") from writer.failure
        final = fingerprint(dict(writer.history.current.items()))
        for name, run in runs.items():
            try:
                wait_for(
                    lambda run=run: (
                        (got := read_target(run.target)) is not None and fingerprint(got[2]) == final
                    ),
                    15,
                    "the final state",
                )
            except AssertionError:
                late.append(
                    Anomaly(name, "the files did not hold etcd's final state 15 s after the last heal")
                )
    finally:
        readers.stop()
    return writer, nemesis, readers, time.time() - healed, late


def staleness_by_fault(
    faults: list[tuple[float, float, str]], stale: list[tuple[float, float]]
) -> dict[str, tuple[float, float]]:
    """(maximum, p99) of the staleness of the commits made under each kind of fault (or in the 10 s
    after it healed), and under none."""
    taken: dict[str, list[float]] = {}
    for at, took in stale:
        kind = next((k for began, ended, k in reversed(faults) if began <= at <= ended + 10), "none")
        taken.setdefault(kind, []).append(took)
    return {
        kind: (
            max(times),
            statistics.quantiles(times, n=100, method="inclusive")[98] if len(times) > 1 else times[0],
        )
        for kind, times in taken.items()
    }


def history_around(history: History, faults: list[tuple[float, float, str]], at: float | None) -> str:
    """The smallest part of the history that shows an anomaly at ``at``: the states committed in the
    second before and after, and the faults then."""
    if at is None:
        return "(no time to the anomaly: the whole run is its history)"
    lines = [f"HISTORY around {at:.3f}:"]
    lines += [
        f"  fault {kind!r} {began:.3f}-{ended:.3f}"
        for began, ended, kind in faults
        if began - 1 <= at <= ended + 10
    ]
    lines += [
        f"  state {position}: revision {revision} at {committed:.3f}, fingerprint {state.hex()[:12]}"
        for position, (revision, committed, state) in enumerate(history.states)
        if at - 1 <= committed <= at + 1
    ]
    return "\n".join(lines)
