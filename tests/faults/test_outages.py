"""Scenarios 1 and 2: etcd killed, down at start, hung (SIGSTOP), and cluster members killed in turn."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from etcd_server import EtcdCluster
from harness import Run

OUTAGES = 5


def test_repeated_kills_keep_files_and_child_and_log_once_per_outage(run: Run) -> None:
    run.etcd.put(("/cfg/a", "0"))
    run.start("--signal=SIGHUP")
    start = run.wait_started()
    catch_up = []
    for n in range(1, OUTAGES + 1):
        run.etcd.kill()
        time.sleep(1.5)
        assert run.files() == {"a": str(n - 1).encode()}
        assert len(run.signals()) == n - 1
        run.etcd.start()
        began = time.monotonic()
        run.etcd.put(("/cfg/a", str(n)))
        assert run.wait_signals(n, timeout=20)[-1]["files"] == {"a": str(n)}
        catch_up.append(time.monotonic() - began)
    assert [r["pid"] for r in run.signals("start")] == [start["pid"]]
    assert run.process is not None and run.process.poll() is None
    assert run.log.count("keeping the current files and retrying") == OUTAGES
    assert run.log.count("etcd is back after") == OUTAGES
    print(f"FIGURE outages survived: {OUTAGES}; put-to-signal after etcd restart: max {max(catch_up):.2f} s")


def test_etcd_down_at_start_then_up(run: Run) -> None:
    run.etcd.put(("/cfg/a", "1"))
    run.etcd.kill()
    run.start("--signal=SIGHUP")
    time.sleep(1.5)
    assert run.signals("start") == []
    assert run.log.count("keeping the current files and retrying") == 1
    run.etcd.start()
    assert run.wait_started(timeout=20)["files"] == {"a": "1"}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[EtcdCluster]:
    with EtcdCluster(tmp_path / "cluster").running() as members:
        yield members


@pytest.fixture
def cluster_run(tmp_path: Path, cluster: EtcdCluster) -> Iterator[Run]:
    run = Run(tmp_path, cluster)
    cluster.put(("/cfg/a", "0"))
    run.start("--signal=SIGHUP")
    yield run
    run.stop()


def test_a_hung_member_is_noticed_and_another_is_used(cluster_run: Run, cluster: EtcdCluster) -> None:
    cluster_run.wait_started()
    # The dispenser starts with the first endpoint; freeze it (hung, not dead: no RST, no FIN).
    cluster.members[0].freeze()
    began = time.monotonic()
    cluster.put(("/cfg/a", "1"))
    assert cluster_run.wait_signals(1, timeout=40)[-1]["files"] == {"a": "1"}
    noticed = time.monotonic() - began
    assert "keeping the current files and retrying" in cluster_run.log
    cluster.members[0].thaw()
    print(f"FIGURE hung member (SIGSTOP) to update via another member: {noticed:.1f} s")


def test_each_member_killed_in_turn_updates_keep_flowing(cluster_run: Run, cluster: EtcdCluster) -> None:
    start = cluster_run.wait_started()
    for n, member in enumerate(cluster.members, start=1):
        member.kill()
        cluster.put(("/cfg/a", str(n)))
        assert cluster_run.wait_signals(n, timeout=30)[-1]["files"] == {"a": str(n)}
        member.launch()
        cluster.wait_ready()
    assert [r["pid"] for r in cluster_run.signals("start")] == [start["pid"]]
