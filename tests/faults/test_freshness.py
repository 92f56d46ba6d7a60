"""Freshness an operator can alert on: ``dispenser_last_sync_timestamp_seconds`` moves when etcd confirms
that the files are current, also when nothing changes, and stops when it cannot: a revoked role or a
removed user (one error line, the files and the child stay, and it recovers by itself)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from etcd_auth import ALICE_PASSWORD, add_alice, grant_reading, remove_alice, revoke_reading
from etcd_server import EtcdServer, free_port
from harness import Run, get, metric, wait_for

LAST_SYNC = "dispenser_last_sync_timestamp_seconds"


def last_sync(port: int) -> float:
    return metric(port, LAST_SYNC) or 0.0


def advancing(port: int, within: float = 5.0) -> bool:
    """Whether the last confirmation moves within ``within`` seconds."""
    before = last_sync(port)
    try:
        wait_for(lambda: last_sync(port) > before, within, "a newer confirmation")
    except AssertionError:
        return False
    return True


@pytest.mark.parametrize("two", [False, True], ids=["one prefix", "two prefixes"])
def test_an_idle_prefix_is_confirmed_current_at_each_interval(run: Run, two: bool) -> None:
    run.etcd.put(("/cfg/a", "1"), ("/nginx/n.conf", "1"))
    port = free_port()
    flags = ("--prefix=/nginx=nginx",) if two else ()
    run.start("--signal=SIGHUP", "--confirm-interval=1s", f"--metrics-address=127.0.0.1:{port}", *flags)
    run.wait_started()
    first = wait_for(lambda: last_sync(port), 10, "the first confirmation")
    for n in range(3):
        run.etcd.put(("/elsewhere/x", str(n)))  # etcd's revision moves; nothing under the prefix does
        assert advancing(port)
    assert last_sync(port) > first + 2
    assert time.time() - last_sync(port) < 3
    assert run.signals() == []


def alice_run(tmp_path: Path, etcd: EtcdServer, port: int) -> Run:
    run = Run(tmp_path, etcd)
    env = run.env(ETCD_USERNAME="alice", ETCD_PASSWORD=ALICE_PASSWORD)
    run.start("--signal=SIGHUP", "--confirm-interval=1s", f"--metrics-address=127.0.0.1:{port}", env=env)
    assert run.wait_started()["files"] == {"a": "1"}
    wait_for(lambda: advancing(port), 10, "confirmations")
    return run


def assert_held_while_denied(run: Run, port: int) -> None:
    """Permission is gone: one error line, the metrics say so, the files and the child stay."""
    run.wait_log("permission to read /cfg/ was lost")
    assert run.log.count("was lost") == 1
    wait_for(lambda: (metric(port, 'dispenser_errors_total{kind="permission"}') or 0) >= 1, 10, "the count")
    assert metric(port, "dispenser_etcd_connected") == 0
    assert not advancing(port, within=3)
    run.etcd.put(("/cfg/a", "2"))  # not readable now
    time.sleep(1.5)
    assert run.files() == {"a": b"1"} and run.signals() == []
    assert run.process is not None and run.process.poll() is None
    assert get(port, "/readyz")[0] == 200


def assert_recovered(run: Run, port: int) -> None:
    """Permission is back: the change made meanwhile arrives, confirmations move again."""
    assert run.wait_signals(1, timeout=20)[-1]["files"] == {"a": "2"}
    run.wait_log("permission to read /cfg/ is back")
    assert advancing(port)
    assert metric(port, "dispenser_etcd_connected") == 1
    assert ALICE_PASSWORD not in run.log


def test_a_revoked_role_is_one_error_and_recovers_when_granted_again(
    tmp_path: Path, auth_etcd: EtcdServer
) -> None:
    port = free_port()
    run = alice_run(tmp_path, auth_etcd, port)
    try:
        revoke_reading(auth_etcd)
        assert_held_while_denied(run, port)
        grant_reading(auth_etcd)
        assert_recovered(run, port)
    finally:
        run.stop()


def test_a_removed_user_is_one_error_and_recovers_when_added_again(
    tmp_path: Path, auth_etcd: EtcdServer
) -> None:
    port = free_port()
    run = alice_run(tmp_path, auth_etcd, port)
    try:
        remove_alice(auth_etcd)
        assert_held_while_denied(run, port)
        add_alice(auth_etcd)
        assert_recovered(run, port)
    finally:
        run.stop()
