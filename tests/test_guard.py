"""The guard against wiping the target: a change that would empty it, or remove more files than
``--max-removed`` allows, is held back; the console script against a real etcd, and the rule alone."""

from __future__ import annotations

import time

import pytest
from etcd_server import free_port
from harness import Run, metric, wait_for

from projector.guard import Guard, Limit
from projector.settings import UsageError, load_options


def delete_prefix(run: Run, prefix: str) -> None:
    """What an operator's ``etcdctl del --prefix`` does: one transaction, every key under the prefix."""
    with run.etcd.client() as client:
        client.delete_prefix(prefix)


def test_a_delete_of_the_whole_prefix_is_held_back_and_the_freshness_timestamp_stops(run: Run) -> None:
    run.etcd.put(("/cfg/cert.pem", "CERT"), ("/cfg/key.pem", "KEY"))
    port = free_port()
    run.start("--signal=SIGHUP", "--confirm-interval=1s", f"--metrics-address=127.0.0.1:{port}")
    run.wait_started()
    wait_for(lambda: metric(port, "dispenser_last_sync_timestamp_seconds"), what="a first confirmation")
    delete_prefix(run, "/cfg/")
    run.wait_log("holding back a change that would remove all 2 files and leave the target empty")
    assert "(--allow-empty lets such a change through)" in run.log
    assert metric(port, 'dispenser_errors_total{kind="guard"}') == 1
    held_at = metric(port, "dispenser_last_sync_timestamp_seconds")
    time.sleep(2.5)  # two confirmation intervals: etcd is read, but the files do not hold what it shows
    assert metric(port, "dispenser_last_sync_timestamp_seconds") == held_at
    assert run.files() == {"cert.pem": b"CERT", "key.pem": b"KEY"} and run.signals() == []
    # The next change is judged on its own: it leaves a file, so it goes through, with the deletes.
    run.etcd.put(("/cfg/cert.pem", "CERT-2"))
    assert run.wait_signals(1)[-1]["files"] == {"cert.pem": "CERT-2"}
    wait_for(
        lambda: (metric(port, "dispenser_last_sync_timestamp_seconds") or 0) > (held_at or 0),
        what="the freshness timestamp moving again",
    )


def test_allow_empty_lets_a_delete_of_everything_through(run: Run) -> None:
    run.etcd.put(("/cfg/cert.pem", "CERT"), ("/cfg/key.pem", "KEY"))
    run.start("--signal=SIGHUP", "--allow-empty")
    run.wait_started()
    delete_prefix(run, "/cfg/")
    assert run.wait_signals(1)[-1]["files"] == {}
    assert run.files() == {} and "holding back" not in run.log


def test_a_restart_against_an_emptied_prefix_keeps_the_files_it_finds(run: Run) -> None:
    run.etcd.put(("/cfg/cert.pem", "CERT"))
    run.start("--once", command=[])
    assert run.wait_exit() == 0
    delete_prefix(run, "/cfg/")  # a restore that lost the keys, while the tool was down
    run.start("--signal=SIGHUP")
    run.wait_log("holding back a change that would remove all 1 files")
    assert run.files() == {"cert.pem": b"CERT"} and run.records_list() == []  # nor is the command started
    run.etcd.put(("/cfg/cert.pem", "CERT-2"))
    assert run.wait_started()["files"] == {"cert.pem": "CERT-2"}


def test_max_removed_holds_back_a_large_removal_and_lets_a_small_one_through(run: Run) -> None:
    run.etcd.put(*((f"/cfg/site{n}.conf", f"conf {n}") for n in range(10)))
    port = free_port()
    run.start("--signal=SIGHUP", "--max-removed=3", f"--metrics-address=127.0.0.1:{port}")
    run.wait_started()
    run.etcd.delete(*(f"/cfg/site{n}.conf" for n in range(4)))
    run.wait_log("holding back a change that would remove 4 of 10 files, more than --max-removed=3")
    assert len(run.files()) == 10 and run.signals() == []
    assert metric(port, 'dispenser_errors_total{kind="guard"}') == 1
    run.etcd.put(("/cfg/site0.conf", "back"), ("/cfg/site1.conf", "back"))  # now it removes 2 in all
    files = run.wait_signals(1)[-1]["files"]
    assert sorted(files) == ["site0.conf", "site1.conf", *(f"site{n}.conf" for n in range(4, 10))]
    run.etcd.delete("/cfg/site9.conf")
    assert "site9.conf" not in run.wait_signals(2)[-1]["files"]


def test_the_rule() -> None:
    guard = Guard(max_removed=Limit(25, percent=True))
    assert guard.judge(live=0, removed=0, left=0) is None  # an empty target stays empty: nothing to wipe
    assert "leave the target empty" in str(guard.judge(live=4, removed=4, left=0))
    assert guard.judge(live=4, removed=1, left=3) is None
    assert "remove 2 of 4 files, more than --max-removed=25%" in str(guard.judge(live=4, removed=2, left=5))
    assert Guard(allow_empty=True).judge(live=4, removed=4, left=0) is None
    assert "--max-removed=3" in str(Guard(True, Limit(3)).judge(live=4, removed=4, left=0))


@pytest.mark.parametrize("text", ["ten", "-1", "101%", "%", "1.5"])
def test_a_bad_max_removed_names_the_flag(text: str) -> None:
    with pytest.raises(UsageError, match=r"^--max-removed: .*number of files"):
        load_options(prefix="/c", target="t", max_removed=text)
