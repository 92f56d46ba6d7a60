"""Scenario 3: a compaction gap. The dispenser is frozen while keys are put and deleted, history is
compacted and etcd restarted; after SIGCONT it must reach exactly etcd's state, signal once, and watch on."""

from __future__ import annotations

import os
import signal
import time

from harness import Run


def test_resync_after_compaction_deletes_what_went_away(run: Run) -> None:
    run.etcd.put(("/cfg/keep", "1"), ("/cfg/gone", "x"), ("/cfg/dir/gone-too", "y"))
    run.start("--signal=SIGHUP")
    run.wait_started()
    assert run.process is not None
    os.kill(run.process.pid, signal.SIGSTOP)
    began = time.monotonic()
    try:
        # Restart first, so that the frozen dispenser's watch is cut before the changes are made and
        # it has to catch up from a revision that compaction has removed.
        run.etcd.restart()
        run.etcd.delete("/cfg/gone", "/cfg/dir/gone-too")
        for n in range(2, 12):
            run.etcd.put(("/cfg/keep", str(n)))
        revision = run.etcd.put(("/cfg/new", "3"))
        run.etcd.compact(revision)
        run.etcd.restart()
    finally:
        os.kill(run.process.pid, signal.SIGCONT)
    record = run.wait_signals(1, timeout=20)[-1]
    caught_up = time.monotonic() - began
    assert record["files"] == {"keep": "11", "new": "3"}
    assert run.files() == {"keep": b"11", "new": b"3"}
    assert not os.path.lexists(run.target / "dir")
    assert "etcd compacted the history we need" in run.log
    run.etcd.put(("/cfg/after", "4"))
    assert run.wait_signals(2)[-1]["files"] == {"keep": "11", "new": "3", "after": "4"}
    time.sleep(0.3)
    assert len(run.signals()) == 2
    print(f"FIGURE compaction gap: resynced and signalled once, {caught_up:.1f} s after the freeze began")
