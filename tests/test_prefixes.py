"""Several prefixes in one target, against a real etcd: one revision per generation, one signal per
transaction across prefixes, one start snapshot, the first --prefix winning a shared path, and the
prefixes' keys through compaction and a member restart."""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from etcd_auth import ALICE_PASSWORD
from etcd_server import EtcdServer
from harness import Run, wait_for
from pyetcd import etcdrpc
from pyetcd.etcdrpc import auth_pb2

NGINX = "--prefix=/nginx=nginx"  # beside the harness's --prefix=/cfg: /nginx's keys under nginx/


def read_generation(target: Path) -> tuple[str, str] | None:
    """What a reader sees through ``..data`` at one moment: the certificate and nginx's config."""
    try:
        generation = target / os.readlink(target / "..data")
        return (generation / "cert.pem").read_text(), (generation / "nginx" / "nginx.conf").read_text()
    except (FileNotFoundError, NotADirectoryError):
        return None


@contextlib.contextmanager
def reading(target: Path) -> Iterator[set[tuple[str, str]]]:
    """Every distinct pair a reader resolving ``..data`` saw in the target while the block ran."""
    seen: set[tuple[str, str]] = set()
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            if (pair := read_generation(target)) is not None:
                seen.add(pair)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join()


def test_a_transaction_across_two_prefixes_is_one_generation_and_one_signal(run: Run) -> None:
    run.etcd.put(("/cfg/cert.pem", "0"), ("/nginx/nginx.conf", "0"))
    run.start("--signal=SIGHUP", NGINX)
    assert run.wait_started()["files"] == {"cert.pem": "0", "nginx/nginx.conf": "0"}
    with reading(run.target) as seen:
        for n in range(1, 31):
            run.etcd.put(("/cfg/cert.pem", str(n)), ("/nginx/nginx.conf", str(n)))
            record = run.wait_signals(n)[-1]
            assert record["files"] == {"cert.pem": str(n), "nginx/nginx.conf": str(n)}
    time.sleep(0.3)
    assert len(run.signals()) == 30
    mixed = {pair for pair in seen if pair[0] != pair[1]}
    assert not mixed and len(seen) > 1, f"a reader saw one prefix new and the other old: {sorted(mixed)}"
    print(f"FIGURE two prefixes: 30 transactions, 30 signals, {len(seen)} distinct reads, none mixed")


def test_the_start_snapshot_of_several_prefixes_is_one_revision(run: Run) -> None:
    run.etcd.put(("/cfg/cert.pem", "0"), ("/nginx/nginx.conf", "0"))
    stop = threading.Event()

    def writer() -> None:  # a transaction across both prefixes, as fast as etcd takes them
        n = 0
        while not stop.is_set():
            n += 1
            run.etcd.put(("/cfg/cert.pem", str(n)), ("/nginx/nginx.conf", str(n)))

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        time.sleep(0.2)
        run.start("--signal=SIGHUP", NGINX, "--once", command=[])
        assert run.wait_exit() == 0
    finally:
        stop.set()
        thread.join()
    files = run.files()
    assert files["cert.pem"] == files["nginx/nginx.conf"] and files["cert.pem"] != b"0"


def test_a_path_from_two_prefixes_goes_to_the_first_given(run: Run) -> None:
    run.etcd.put(("/cfg/shared.conf", "from cfg"), ("/other/shared.conf", "from other"))
    run.start("--signal=SIGHUP", "--prefix=/other")
    assert run.wait_started()["files"] == {"shared.conf": "from cfg"}
    run.wait_log("refusing key '/other/shared.conf': '/cfg/shared.conf' lands on the same path")
    assert "from other" not in run.log
    run.etcd.delete("/cfg/shared.conf")
    assert run.wait_signals(1)[-1]["files"] == {"shared.conf": "from other"}
    run.etcd.put(("/cfg/shared.conf", "back"))
    assert run.wait_signals(2)[-1]["files"] == {"shared.conf": "back"}


def test_several_prefixes_through_compaction_and_a_restart(run: Run) -> None:
    run.etcd.put(("/cfg/cert.pem", "1"), ("/nginx/nginx.conf", "1"), ("/nginx/gone.conf", "x"))
    run.start("--signal=SIGHUP", NGINX)
    run.wait_started()
    assert run.process is not None
    os.kill(run.process.pid, signal.SIGSTOP)
    try:
        run.etcd.restart()
        run.etcd.delete("/nginx/gone.conf")
        for n in range(2, 8):
            revision = run.etcd.put(("/cfg/cert.pem", str(n)), ("/nginx/nginx.conf", str(n)))
        run.etcd.compact(revision)
        run.etcd.restart()
    finally:
        os.kill(run.process.pid, signal.SIGCONT)
    record = run.wait_signals(1, timeout=20)[-1]
    assert record["files"] == {"cert.pem": "7", "nginx/nginx.conf": "7"}
    run.etcd.put(("/cfg/cert.pem", "8"), ("/nginx/nginx.conf", "8"))
    assert run.wait_signals(2)[-1]["files"] == {"cert.pem": "8", "nginx/nginx.conf": "8"}
    wait_for(lambda: run.files().get("cert.pem") == b"8", what="the files")
    time.sleep(0.3)
    assert len(run.signals()) == 2


def live_revisions(log: str) -> list[int]:
    """The revision of each generation the log says went live, in order."""
    return [int(m) for m in re.findall(r"INFO revision (\d+): generation \S+ is live", log)]


def test_a_backlog_across_prefixes_is_applied_one_whole_transaction_at_a_time(run: Run) -> None:
    """The dispenser stopped while 600 transactions across both prefixes commit: etcd's buffer for its
    stream fills and its watchers fall behind, each on its own. However they catch up, no revision is
    applied in parts (the same revision live twice) and no reader sees one prefix ahead of the other."""
    run.etcd.put(("/cfg/cert.pem", "0"), ("/nginx/nginx.conf", "0"))
    run.start("--signal=SIGHUP", NGINX)
    run.wait_started()
    assert run.process is not None
    with reading(run.target) as seen, contextlib.ExitStack() as resume:
        resume.callback(os.kill, run.process.pid, signal.SIGCONT)
        os.kill(run.process.pid, signal.SIGSTOP)
        with run.etcd.client() as client:
            for n in range(1, 601):
                big = str(n) + "." * 20_000  # fills etcd's send buffer with fewer transactions
                client.transaction(
                    compare=[],
                    success=[
                        client.transactions.put("/cfg/cert.pem", big),
                        client.transactions.put("/nginx/nginx.conf", big),
                    ],
                    failure=[],
                )
        os.kill(run.process.pid, signal.SIGCONT)
        final = "600" + "." * 20_000
        wait_for(lambda: read_generation(run.target) == (final, final), 30, "the last transaction")
    revisions = live_revisions(run.log)
    twice = sorted({r for r, after in itertools.pairwise(revisions) if after <= r})
    assert not twice, f"revisions applied in parts (live twice, or out of order): {twice}"
    mixed = {(a[:5], b[:5]) for a, b in seen if a != b}
    assert not mixed, f"a reader saw one prefix ahead of the other: {sorted(mixed)[:5]}"
    print(f"FIGURE a backlog of 600 across two prefixes: {len(revisions)} generations, none in parts")


def test_a_role_that_may_read_each_prefix_but_not_between_them_gets_a_watcher_each(
    tmp_path: Path, auth_etcd: EtcdServer
) -> None:
    """alice may read /cfg/ and /nginx/, not the keys between: the covering watch is refused, each
    prefix is watched on its own, with one warning that says what that costs."""
    nginx = auth_pb2.Permission(permType=auth_pb2.Permission.READ, key=b"/nginx/", range_end=b"/nginx0")
    with auth_etcd.client() as client:
        request = etcdrpc.AuthRoleGrantPermissionRequest(name="reader", perm=nginx)
        etcdrpc.AuthStub(client.channel).RoleGrantPermission(request, metadata=client.metadata)
    auth_etcd.put(("/cfg/cert.pem", "0"), ("/nginx/nginx.conf", "0"), ("/k/between", "not for alice"))
    run = Run(tmp_path, auth_etcd)
    try:
        run.start("--signal=SIGHUP", NGINX, env=run.env(ETCD_USERNAME="alice", ETCD_PASSWORD=ALICE_PASSWORD))
        assert run.wait_started()["files"] == {"a": "1", "cert.pem": "0", "nginx/nginx.conf": "0"}
        for n in range(1, 4):
            auth_etcd.put(("/cfg/cert.pem", str(n)), ("/nginx/nginx.conf", str(n)))
            record = run.wait_signals(n)[-1]
            assert record["files"] == {"a": "1", "cert.pem": str(n), "nginx/nginx.conf": str(n)}
        assert run.log.count("the role may read each prefix but not the range that covers them") == 1
        assert "not for alice" not in run.log and ALICE_PASSWORD not in run.log
    finally:
        run.stop()
