"""A member cut off from its peers: it still answers the dispenser, but has no leader and falls behind
while the other two keep a quorum and take writes. The dispenser must leave it, resume through another
member from the last applied revision + 1, lose nothing and apply nothing twice."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from etcd_server import EtcdCluster, free_port
from harness import Run, metric, wait_for
from partition import Partition, own_data_dir, partition_or_skip
from test_freshness import advancing

# etcd's default timing (the suite's clusters elect in 0.1 s): a member notices it has no leader after
# an election timeout, and etcd ends watches that require one after three more.
DEFAULT_ELECTIONS = ["--heartbeat-interval=100", "--election-timeout=1000"]


def applied_revisions(log: str) -> list[int]:
    return [int(n) for n in re.findall(r"revision (\d+): generation", log)]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[EtcdCluster]:
    """Three members with etcd's default timing; the first (the dispenser's first endpoint) can be cut
    off from the others."""
    partition_or_skip()
    members = EtcdCluster(tmp_path / "cluster")
    for member in members.members:
        member.extra_args = DEFAULT_ELECTIONS
    with own_data_dir(members.members[0]):
        yield members


@pytest.mark.parametrize("two", [False, True], ids=["one prefix", "two prefixes"])
def test_a_member_cut_off_from_its_peers_is_left(tmp_path: Path, cluster: EtcdCluster, two: bool) -> None:
    flags, conf = (("--prefix=/nginx=nginx",), {"nginx/n.conf": "0"}) if two else ((), {})
    with cluster.running():
        run = Run(tmp_path, cluster)
        try:
            cluster.put(("/cfg/a", "0"), ("/cfg/b", "0"), ("/nginx/n.conf", "0"))
            run.start("--signal=SIGHUP", *flags)
            run.wait_started()
            with Partition(cluster.members[0]):
                began = time.monotonic()
                cluster.put(("/cfg/a", "1"))
                cluster.put(("/cfg/b", "1"))
                wait_for(
                    lambda: any(record["files"].get("b") == "1" for record in run.signals()),
                    30,
                    "both changes, through another member",
                )
                run.wait_log("etcd is back after", timeout=30)
                left = time.monotonic() - began
                signalled = len(run.signals())  # (one or two: the two transactions may come apart)
                run.etcd.put(("/cfg/a", "2"))
                files = run.wait_signals(signalled + 1, timeout=30)[-1]["files"]
                assert files == {"a": "2", "b": "1", **conf}
            assert run.files() == {"a": b"2", "b": b"1", **{k: v.encode() for k, v in conf.items()}}
            assert len(run.signals()) <= 3  # at most one per transaction
            revisions = applied_revisions(run.log)
            assert revisions == sorted(set(revisions)), revisions  # nothing applied twice
            outage = [line for line in run.log.splitlines() if "keeping the current files" in line]
            assert len(outage) == 1 and ("no leader" in outage[0] or "watch canceled" in outage[0]), outage
        finally:
            run.stop()
    print(f"FIGURE a partitioned member left, the change delivered through another: {left:.1f} s")


def test_files_are_not_confirmed_current_through_a_member_cut_off(
    tmp_path: Path, cluster: EtcdCluster
) -> None:
    with cluster.running():
        run = Run(tmp_path, cluster)
        port = free_port()
        only = run.env(ETCD_ENDPOINTS=cluster.members[0].endpoint)  # nowhere else to go
        try:
            cluster.put(("/cfg/a", "0"))
            run.start(
                "--signal=SIGHUP", "--confirm-interval=1s", f"--metrics-address=127.0.0.1:{port}", env=only
            )
            run.wait_started()
            assert wait_for(lambda: advancing(port), 10, "confirmations")
            with Partition(cluster.members[0]):
                cluster.put(("/cfg/a", "1"))
                wait_for(lambda: metric(port, "dispenser_etcd_connected") == 0, 20, "the watch ended")
                assert not advancing(port, within=4)
                assert run.files() == {"a": b"0"}
            assert run.wait_signals(1, timeout=30)[-1]["files"] == {"a": "1"}
            assert wait_for(lambda: advancing(port), 10, "confirmations again")
        finally:
            run.stop()
