"""etcd's own gRPC proxy (``etcd grpc-proxy start``) between the dispenser and etcd: everything works as
against etcd itself. The proxy ends a watch whose client closes its sending side, so this is where a
watch that half-closes would show: it would never see a change."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from etcd_auth import ALICE_PASSWORD, enable_auth
from etcd_server import EtcdCluster, EtcdServer, GrpcProxy, Member, free_port
from harness import Run, metric, wait_for
from pyetcd import etcdrpc
from test_freshness import advancing

MIB = 1024 * 1024


@pytest.fixture
def proxy(tmp_path: Path, etcd: EtcdServer) -> Iterator[GrpcProxy]:
    with GrpcProxy(etcd, tmp_path / "proxy").running() as running:
        yield running


def through(run: Run, proxy: GrpcProxy, **extra: str) -> dict[str, str]:
    return run.env(ETCD_ENDPOINTS=proxy.endpoints, **extra)


@pytest.mark.parametrize("two", [False, True], ids=["one prefix", "two prefixes"])
def test_first_projection_and_one_signal_per_transaction(run: Run, proxy: GrpcProxy, two: bool) -> None:
    # With two prefixes, each transaction touches both: the proxy forwards their responses apart.
    flags, conf = (("--prefix=/nginx=nginx",), {"nginx/n.conf": "N0"}) if two else ((), {})
    run.etcd.put(
        ("/cfg/cert.pem", "C0"), ("/cfg/key.pem", "K0"), ("/cfg/sub/x", "x"), ("/nginx/n.conf", "N0")
    )
    run.start("--signal=SIGHUP", *flags, env=through(run, proxy))
    assert run.wait_started()["files"] == {"cert.pem": "C0", "key.pem": "K0", "sub/x": "x", **conf}
    for n in range(1, 6):
        run.etcd.put(("/cfg/cert.pem", f"C{n}"), ("/cfg/key.pem", f"K{n}"), ("/nginx/n.conf", f"N{n}"))
        conf = {"nginx/n.conf": f"N{n}"} if two else {}
        assert run.wait_signals(n)[-1]["files"] == {
            "cert.pem": f"C{n}",
            "key.pem": f"K{n}",
            "sub/x": "x",
            **conf,
        }
    run.etcd.delete("/cfg/sub/x")
    assert run.wait_signals(6)[-1]["files"] == {"cert.pem": "C5", "key.pem": "K5", **conf}
    time.sleep(0.5)
    assert len(run.signals()) == 6
    assert "keeping the current files" not in run.log  # the watch was never cut


def test_the_proxy_restarted_under_a_running_dispenser(run: Run, proxy: GrpcProxy) -> None:
    run.etcd.put(("/cfg/a", "0"))
    port = free_port()
    run.start(
        "--signal=SIGHUP",
        "--confirm-interval=1s",
        f"--metrics-address=127.0.0.1:{port}",
        env=through(run, proxy),
    )
    start = run.wait_started()
    assert wait_for(lambda: advancing(port), 10, "confirmations")
    proxy.kill()
    run.etcd.put(("/cfg/a", "1"))  # while the proxy is down: caught up from revision + 1 later
    run.wait_log("keeping the current files and retrying")
    assert not advancing(port, within=3)  # a dead proxy confirms nothing
    assert metric(port, "dispenser_etcd_connected") == 0
    assert run.files() == {"a": b"0"}
    proxy.start()
    assert run.wait_signals(1, timeout=20)[-1]["files"] == {"a": "1"}
    assert wait_for(lambda: advancing(port), 10, "confirmations again")
    run.etcd.put(("/cfg/a", "2"))
    assert run.wait_signals(2)[-1]["files"] == {"a": "2"}
    assert [r["pid"] for r in run.signals("start")] == [start["pid"]]
    assert run.log.count("keeping the current files and retrying") == 1


def test_large_values_through_the_proxy(run: Run, proxy: GrpcProxy) -> None:
    values = {f"big{n}": os.urandom(MIB) for n in range(3)}
    for name, value in values.items():
        run.etcd.put((f"/cfg/{name}", value))
    run.start("--once", env=through(run, proxy), command=[])
    assert run.wait_exit(60) == 0
    assert run.files() == values


@contextlib.contextmanager
def alice_through_a_proxy(tmp_path: Path, *etcd_flags: str) -> Iterator[tuple[EtcdServer, Run]]:
    """etcd with /cfg/a = 1 and authentication on, a proxy in front, and a dispenser through it as
    alice (who may read only /cfg/), checking every second; stopped after the block."""
    with EtcdServer(tmp_path / "etcd-data", list(etcd_flags)).running() as etcd:
        etcd.put(("/cfg/a", "1"), ("/secret/other", "not for alice"))
        enable_auth(etcd)
        with GrpcProxy(etcd, tmp_path / "proxy").running() as proxy:
            run = Run(tmp_path, etcd)
            try:
                env = through(run, proxy, ETCD_USERNAME="alice", ETCD_PASSWORD=ALICE_PASSWORD)
                run.start("--signal=SIGHUP", "--confirm-interval=1s", env=env)
                assert run.wait_started()["files"] == {"a": "1"}
                yield etcd, run
            finally:
                run.stop()


def test_auth_through_the_proxy(tmp_path: Path) -> None:
    with alice_through_a_proxy(tmp_path, "--auth-token-ttl=2") as (etcd, run):
        etcd.put(("/cfg/a", "2"))
        assert run.wait_signals(1)[-1]["files"] == {"a": "2"}
        time.sleep(3)  # the token (TTL 2 s) expires; the freshness checks renew it
        etcd.put(("/cfg/a", "3"))
        assert run.wait_signals(2)[-1]["files"] == {"a": "3"}
        assert ALICE_PASSWORD not in run.log
        assert "keeping the current files" not in run.log


def test_push_through_the_proxy(etcd: EtcdServer, proxy: GrpcProxy, tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "cert.pem").write_text("C1")
    (source / "key.pem").write_text("K1")
    command = shutil.which("etcd-config-push", path=os.path.dirname(sys.executable))
    assert command
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
    argv = [command, "--prefix=/cfg", f"--source={source}"]
    done = subprocess.run(
        argv, env={**env, "ETCD_ENDPOINTS": proxy.endpoints}, capture_output=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    with etcd.client() as client:
        assert {kv.key: kv.value for kv in client.get_prefix_response("/cfg/").kvs} == {
            b"/cfg/cert.pem": b"C1",
            b"/cfg/key.pem": b"K1",
        }


def watchers(member: Member) -> float:
    """How many watchers the member holds, from its own /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{member.client_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    found = re.search(r"^etcd_debugging_mvcc_watcher_total (\S+)$", text, re.MULTILINE)
    assert found, "etcd's /metrics has no watcher count"
    return float(found.group(1))


def test_a_hung_member_behind_the_proxy(tmp_path: Path) -> None:
    """The proxy's own watch on etcd has no keepalive: when the member it is on hangs, the proxy keeps
    our watch open and silent. The freshness check notices, and a new watch is made."""
    cluster = EtcdCluster(tmp_path / "cluster")
    with cluster.running(), GrpcProxy(cluster, tmp_path / "proxy").running() as proxy:
        run = Run(tmp_path, cluster)
        try:
            cluster.put(("/cfg/a", "0"))
            time.sleep(0.5)
            before = [watchers(m) for m in cluster.members]
            run.start("--signal=SIGHUP", "--confirm-interval=1s", env=through(run, proxy))
            run.wait_started()
            time.sleep(0.5)
            grown = [watchers(m) - n for m, n in zip(cluster.members, before, strict=True)]
            holder = cluster.members[grown.index(max(grown))]  # where the proxy watches for us
            holder.freeze()
            began = time.monotonic()
            cluster.put(("/cfg/a", "1"))
            assert run.wait_signals(1, timeout=40)[-1]["files"] == {"a": "1"}
            took = time.monotonic() - began
            assert run.log.count("keeping the current files and retrying") == 1
            holder.thaw()
        finally:
            run.stop()
    print(f"FIGURE a hung member behind the proxy: the change arrived {took:.1f} s after the freeze")


def test_a_proxy_whose_watches_hang_after_a_token_expired(tmp_path: Path) -> None:
    """etcd's grpc-proxy (3.4 to 3.6, etcd #19296, #19033) shares one stream to etcd among its
    watchers, opened with the first one's token. Once that token is void (its TTL, a password change)
    and etcd restarts, the proxy resumes its watches on a new stream with that token: the open ones
    fall silent, and new ones can hang until the proxy restarts. Its reads still work: the dispenser
    reads the prefix anew after its watch failed, so the files keep up."""
    with alice_through_a_proxy(tmp_path) as (etcd, run):
        void_tokens(etcd)  # the token the proxy's stream to etcd was opened with, among them
        etcd.put(("/cfg/a", "2"))
        assert run.wait_signals(1)[-1]["files"] == {"a": "2"}  # (the open watch still works)
        etcd.restart()
        etcd.put(("/cfg/a", "3"))
        assert run.wait_signals(2, timeout=40)[-1]["files"] == {"a": "3"}
        assert "had still not come through the watch" in run.log  # the proxy's watch was wedged
        etcd.put(("/cfg/a", "4"))  # (new watches may hang too, or work once the old stream is gone)
        assert run.wait_signals(3, timeout=40)[-1]["files"] == {"a": "4"}


def void_tokens(etcd: EtcdServer) -> None:
    """Every token of alice void at once, as their TTL would: a change of her password to the same."""
    with etcd.client() as client:
        request = etcdrpc.AuthUserChangePasswordRequest(name="alice", password=ALICE_PASSWORD)
        etcdrpc.AuthStub(client.channel).UserChangePassword(request, 5.0, metadata=client.metadata)
