"""A change that comes while the command is starting does not kill it (``--start-grace``).

End to end, with the real console script and real commands that set their handlers late: the signal
waits until the command catches (or blocks) it, then exactly one is sent; a command that never
handles it gets it once the grace is over, with a warning. And the dispositions read from /proc.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
from harness import Run, wait_for

from projector import dispositions

pytestmark = pytest.mark.skipif(not dispositions.available(), reason="no /proc/<pid>/status here")

# Python lines for the commands below: every signal blocked (as a shell guards a fork), and a thread
# that waits for SIGHUP (as a program that takes its signals in a thread of their own).
BLOCK_ALL = "signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())"
WAITER = "threading.Thread(target=signal.sigwaitinfo, args=((signal.SIGHUP,),), daemon=True).start()"


def test_a_change_while_the_command_sets_up_waits_for_its_handler(run: Run) -> None:
    out = run.tmp_path / "late-handler.out"
    # A shell whose SIGHUP handler (trap) is set only 500 ms after it starts; until then SIGHUP kills it.
    script = (
        'sleep 0.5; trap \'printf "%s\\n" "$(cat "$1/a")" >> "$2"\' HUP; echo ready >> "$2"; '
        "while :; do sleep 0.02; done"
    )
    run.etcd.put(("/cfg/a", "old"))
    run.start("--signal=SIGHUP", command=["sh", "-c", script, "late", str(run.target), str(out)])
    run.wait_log("started sh")
    run.etcd.put(("/cfg/a", "new"))  # committed while the command has no handler yet
    run.wait_log("generation")  # written at once, as usual
    wait_for(lambda: out.exists() and out.read_text().count("\n") >= 2, 10, "the command's SIGHUP")
    time.sleep(0.5)  # a second signal would show by now
    assert out.read_text().splitlines() == ["ready", "new"]  # one SIGHUP, after the handler, new files
    assert run.process is not None and run.process.poll() is None, run.log
    assert "sent SIGHUP to sh, held" in run.log
    assert "does not handle" not in run.log


def test_a_restarted_command_is_stopped_only_once_it_takes_sigterm(run: Run) -> None:
    run.etcd.put(("/cfg/a", "0"))
    env = run.env(CHILD_SETUP_DELAY="0.5")  # the recorder takes signals 500 ms after it starts
    run.start("--restart", env=env)
    run.wait_log("started ")
    run.etcd.put(("/cfg/a", "1"))  # while the first command has no handler yet
    wait_for(lambda: len(run.signals("start")) == 2, 15, "the command restarted")
    first, second = run.signals("start")
    assert first["files"] == {"a": "0"} or first["files"] == {"a": "1"}
    assert second["files"] == {"a": "1"}
    # The first one lived to take its SIGTERM (recorded, then exited by itself): it was not killed.
    assert [r["pid"] for r in run.signals("SIGTERM")] == [first["pid"]]
    time.sleep(0.7)  # the new command is set up by now; nothing else changed
    assert len(run.signals("start")) == 2 and run.signals("SIGTERM") == [run.signals("SIGTERM")[0]]
    assert run.process is not None and run.process.poll() is None, run.log


def test_a_change_while_the_command_blocks_every_signal_waits_for_its_handler(run: Run) -> None:
    out = run.tmp_path / "guarded.out"
    ready = run.tmp_path / "ready"
    # What dash does around each fork, stretched to 1.5 s: every signal blocked, none handled. A signal
    # sent then is pending, and kills the command the moment the block is lifted.
    script = (
        f"import signal, time; {BLOCK_ALL}; open({str(ready)!r}, 'w').close(); time.sleep(1.5); "
        "signal.pthread_sigmask(signal.SIG_SETMASK, []); time.sleep(0.3); "
        f"signal.signal(signal.SIGHUP, lambda *a: open({str(out)!r}, 'a').write("
        f"open({str(run.target / 'a')!r}).read() + '\\n')); "
        f"open({str(out)!r}, 'a').write('handling\\n')\n"
        "while True: time.sleep(0.02)"
    )
    run.etcd.put(("/cfg/a", "old"))
    run.start("--signal=SIGHUP", command=[sys.executable, "-c", script])
    wait_for(ready.exists, 10, "the command's block")
    run.etcd.put(("/cfg/a", "new"))  # committed while every signal is blocked
    run.wait_log("generation")
    wait_for(lambda: out.exists() and out.read_text().count("\n") >= 2, 10, "the command's SIGHUP")
    time.sleep(0.5)  # a second signal would show by now
    assert out.read_text().splitlines() == ["handling", "new"]  # one SIGHUP, after the handler
    assert run.process is not None and run.process.poll() is None, run.log
    assert "does not handle" not in run.log


def test_a_command_that_never_handles_the_signal_gets_it_after_the_grace(run: Run) -> None:
    ready = run.tmp_path / "ready"
    run.etcd.put(("/cfg/a", "0"))
    never = ["sh", "-c", f"touch {ready}; exec sleep 60"]  # sleep(1) never handles SIGHUP
    run.start("--signal=SIGHUP", "--start-grace=4s", command=never)
    run.wait_log("started sh")
    run.etcd.put(("/cfg/a", "1"))
    wait_for(ready.exists, 10, "the command")
    assert run.wait_exit(15) == 128 + signal.SIGHUP  # today's behaviour, once the grace is over
    warning = "does not handle SIGHUP 4 s after it started"
    assert run.log.count(warning) == 1
    # Measured by the dispenser's own clock (its log), not by when this test saw the log:
    assert logged_at(run.log, warning) - logged_at(run.log, "started sh") >= 1.4, run.log


def logged_at(log: str, text: str) -> float:
    """The time of the first log line holding ``text``, in seconds."""
    line = next(line for line in log.splitlines() if text in line)
    stamp = datetime.strptime(line.split()[0], "%Y-%m-%dT%H:%M:%S.%fZ")
    return stamp.timestamp()


def test_a_command_that_already_handles_the_signal_is_signalled_at_once(run: Run) -> None:
    run.etcd.put(("/cfg/a", "0"))
    run.start("--signal=SIGHUP")
    run.wait_started()  # the recorder blocks its signals before this record
    for n in range(1, 4):
        run.etcd.put(("/cfg/a", str(n)))
        run.wait_signals(n)
    assert [r["files"] for r in run.signals()] == [{"a": str(n)} for n in range(1, 4)]
    assert "held" not in run.log


def test_dispositions_show_what_a_process_catches_ignores_and_blocks(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    setups = {
        "caught": "import signal, time; signal.signal(signal.SIGHUP, lambda *a: None); {}",
        "ignored": "import signal, time; signal.signal(signal.SIGHUP, signal.SIG_IGN); {}",
        "blocked": "import signal, time; signal.pthread_sigmask(signal.SIG_BLOCK, {{signal.SIGHUP}}); {}",
        "default": "import time; {}",
        # sigwaitinfo unblocks what it waits for while it waits: the wait itself is what shows
        "waiting": "import signal, time; {}; signal.sigwaitinfo({{signal.SIGHUP}})",
        # Every signal blocked is how a shell guards a fork: fatal once lifted, unless a thread waits.
        "guarding": f"import signal, time; {BLOCK_ALL}; {{}}",
        "guarded": f"import signal, threading, time; {BLOCK_ALL}; {WAITER}; {{}}",
    }
    for kind, setup in setups.items():
        ready.unlink(missing_ok=True)
        then = "" if kind == "waiting" else "; time.sleep(30)"
        argv = [sys.executable, "-c", setup.format(f"open({str(ready)!r}, 'w').close(){then}")]
        process = subprocess.Popen(argv)
        try:
            wait_for(ready.exists, 10, f"the {kind} process")
            time.sleep(0.2)  # into its sleep or its wait
            taken = kind not in ("default", "guarding")
            assert dispositions.takes(process.pid, signal.SIGHUP) is taken, kind
            if kind not in ("waiting", "guarded"):  # (which signals a wait is for is not shown)
                assert dispositions.takes(process.pid, signal.SIGUSR2) is False, kind
                assert dispositions.takes(process.pid, signal.SIGRTMIN) is False, kind  # from status
            assert dispositions.command_line(process.pid) == dispositions.as_command_line(argv)
        finally:
            process.kill()
            process.wait()
    assert dispositions.takes(process.pid, signal.SIGHUP) is None  # gone
