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

import os
import random
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from etcd_server import EtcdCluster, GrpcProxy
from faults import FAULTS, Nemesis
from harness import Run, wait_for
from history import Anomaly, Readers, Writer, check, check_records, fingerprint, read_target, staleness
from partition import own_data_dir, partition_or_skip

SECONDS = float(os.environ.get("NEMESIS_SECONDS", "60"))
# Opt-in until the anomaly it found on 2026-12-03 is diagnosed (a child's read on SIGHUP matching no
# state of etcd, fixed seed, once in three CI runs; issue 21): scripts/nemesis runs it.
pytestmark = pytest.mark.skipif(
    "NEMESIS_SECONDS" not in os.environ,
    reason="the nemesis runs with scripts/nemesis: opt-in until its open anomaly is diagnosed",
)
FIXED_SEED = 20261203


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[EtcdCluster]:
    partition_or_skip()
    members = EtcdCluster(tmp_path / "cluster")
    with own_data_dir(members.members[0]):
        yield members


@pytest.mark.parametrize("seeded", ["fixed", "random"])
def test_random_faults_under_random_transactions(tmp_path: Path, cluster: EtcdCluster, seeded: str) -> None:
    seed = int(
        os.environ.get("NEMESIS_SEED") or (FIXED_SEED if seeded == "fixed" else random.randrange(10**9))
    )
    print(f"\nNEMESIS seed={seed} (NEMESIS_SEED={seed} replays it)")
    with cluster.running(), GrpcProxy(cluster, tmp_path / "proxy").running() as proxy:
        runs = {"direct": Run(tmp_path / "direct", cluster), "proxied": Run(tmp_path / "proxied", cluster)}
        for run in runs.values():
            run.tmp_path.mkdir(parents=True)
        env = {"direct": runs["direct"].env(), "proxied": runs["proxied"].env(ETCD_ENDPOINTS=proxy.endpoints)}

        def start(name: str) -> None:
            runs[name].start("--signal=SIGHUP", "--confirm-interval=1s", "--allow-empty", env=env[name])

        writer = Writer(cluster, seed)
        writer.start_state()
        for name in runs:
            start(name)
        readers = Readers({name: run.target for name, run in runs.items()})
        nemesis = Nemesis(cluster, proxy, runs, start, seed + 1)
        threads = [threading.Thread(target=writer.run), threading.Thread(target=nemesis.run)]
        began = time.time()
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
            time.sleep(SECONDS)
        finally:
            nemesis.stopping.set()
            threads[1].join() if threads[1].is_alive() else None
            writer.stopping.set()
            threads[0].join() if threads[0].is_alive() else None
        healed, late = time.time(), []
        try:
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
            caught_up = time.time() - healed
        finally:
            readers.stop()
            for run in runs.values():
                run.stop()
        anomalies, seen = check(writer.history, readers.reads)
        anomalies += late
        for name, run in runs.items():
            anomalies += check_records(writer.history, name, run.records_list())
        faults = {kind: sum(1 for _b, _e, k in nemesis.log if k == kind) for kind in FAULTS}
        stale = [(at, took) for name in seen for at, took in staleness(writer.history, seen[name])]
        worst, under = max(stale, default=(0.0, 0.0), key=lambda item: item[1]), "none"
        for start_at, end_at, kind in nemesis.log:
            if start_at <= worst[0] <= end_at + 10:
                under = kind
        p99 = statistics.quantiles([took for _at, took in stale], n=100)[98] if len(stale) > 100 else 0.0
        tracebacks = [name for name, run in runs.items() if "Traceback" in run.log]
        history = writer.history
        print(
            f"NEMESIS duration={time.time() - began:.0f}s seed={seed} transactions={history.transactions}"
            f" (outcome resolved by the marker: {history.unknown}) faults={faults}"
            f" reads={len(readers.reads)} (a file gone mid-read: {readers.vanished})"
            f" anomalies={len(anomalies)} max-staleness={worst[1]:.1f}s under {under!r}"
            f" p99-staleness={p99:.2f}s caught-up={caught_up:.1f}s after the last heal"
        )
        for anomaly in anomalies[:10]:
            print(f"ANOMALY {anomaly.who}: {anomaly.what}")
        assert not anomalies, f"seed {seed}: {len(anomalies)} anomalies, first: {anomalies[0]}"
        assert not tracebacks, f"seed {seed}: a traceback in the log of {tracebacks}"
        for name, run in runs.items():
            leftovers = [p.name for p in run.target.iterdir() if p.name.startswith("..data_tmp")]
            assert not leftovers, f"{name}: temporary entries left: {leftovers}"
