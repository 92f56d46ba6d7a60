"""--check validates a candidate generation before it goes live; --on-change runs after each swap."""

from __future__ import annotations

import signal
from pathlib import Path

from harness import Run, generations, wait_for


def test_check_rejects_a_bad_candidate_and_the_next_change_is_tried(run: Run) -> None:
    run.etcd.put(("/cfg/cert.pem", "good-1"), ("/cfg/key.pem", "good-1"))
    # like checking that a certificate matches its key: both files must carry the same tag
    check = 'test "$(cat "$DISPENSER_CANDIDATE/cert.pem")" = "$(cat "$DISPENSER_CANDIDATE/key.pem")"'
    run.start("--signal=SIGHUP", f"--check={check}")
    assert run.wait_started()["files"] == {"cert.pem": "good-1", "key.pem": "good-1"}
    run.etcd.put(("/cfg/cert.pem", "good-2"))  # a certificate without its key
    run.wait_log("--check rejected the new files (exit status 1)")
    assert run.files() == {"cert.pem": b"good-1", "key.pem": b"good-1"}
    assert run.signals() == []
    assert len(generations(run.target)) == 1  # the rejected candidate is gone
    run.etcd.put(("/cfg/key.pem", "good-2"))
    assert run.wait_signals(1)[-1]["files"] == {"cert.pem": "good-2", "key.pem": "good-2"}


def test_on_change_runs_after_the_first_projection_and_each_swap(run: Run, tmp_path: Path) -> None:
    seen = tmp_path / "on-change.log"
    run.etcd.put(("/cfg/a", "1"))
    # appends what it sees, and fails for the value 3
    on_change = f'v=$(cat "$DISPENSER_GENERATION/a"); echo "$v" >> {seen}; test "$v" != 3'
    run.start(f"--on-change={on_change}", command=[])
    wait_for(lambda: seen.exists() and seen.read_text().split() == ["1"], 10, "the first on-change")
    for n in (2, 3, 4):
        run.etcd.put(("/cfg/a", str(n)))
        wait_for(lambda n=n: seen.read_text().split()[-1:] == [str(n)], 10, f"on-change for {n}")
    assert seen.read_text().split() == ["1", "2", "3", "4"]
    assert run.log.count("--on-change failed (exit status 1)") == 1  # for 3: logged, not fatal
    assert run.process is not None and run.process.poll() is None


def test_signals_reach_the_child_while_a_check_holds_up_a_change(run: Run, tmp_path: Path) -> None:
    gate, checking = tmp_path / "gate", tmp_path / "checking"
    gate.touch()
    run.etcd.put(("/cfg/a", "1"))
    # the check of a change waits until the test opens the gate
    check = f"touch {checking}; while [ ! -e {gate} ]; do sleep 0.05; done; rm {checking}"
    run.start("--signal=SIGHUP", f"--check={check}")
    run.wait_started()
    gate.unlink()
    run.etcd.put(("/cfg/a", "2"))
    wait_for(checking.exists, 10, "the check of the change")
    run.send(signal.SIGUSR1)
    run.wait_signals(1, "SIGUSR1")
    assert checking.exists()  # forwarded while the check still runs
    assert run.files() == {"a": b"1"} and run.signals() == []
    gate.touch()
    assert run.wait_signals(1)[-1]["files"] == {"a": "2"}
