"""Each signal's fate: README's table is signals.py's, and a sidecar says what it ignores."""

from __future__ import annotations

import signal
from pathlib import Path

from harness import Run

from projector import signals

README = Path(__file__).parent.parent / "README.md"


def test_readme_shows_the_signals_table_row_for_row() -> None:
    lines = [line.strip() for line in README.read_text().splitlines()]
    rows = signals.markdown()
    start = lines.index(rows[0])
    assert lines[start : start + len(rows)] == rows
    assert lines[start + len(rows)] == ""  # nothing else in the table


def test_a_sidecar_logs_the_signals_it_ignores_and_stops_on_the_others(run: Run) -> None:
    run.etcd.put(("/cfg/a", "1"))
    run.start(command=[])
    run.wait_log("is live")
    for fate in signals.TABLE:
        if not fate.stops:
            run.send(fate.signal)
            run.wait_log(f"received {fate.signal.name}; ignored: no command is running to forward it to")
    assert run.process is not None and run.process.poll() is None
    run.send(signal.SIGQUIT)
    assert run.wait_exit() == 0
    assert "received SIGQUIT; exiting" in run.log


def test_the_command_starts_with_no_signal_ignored(run: Run) -> None:
    """Python ignores SIGPIPE and SIGXFSZ; the command must not inherit that through exec(2)."""
    out = run.tmp_path / "ignored"
    run.etcd.put(("/cfg/a", "1"))
    run.start(command=["sh", "-c", 'grep SigIgn /proc/$$/status > "$1"', "sh", str(out)])
    assert run.wait_exit() == 0
    ignored = int(out.read_text().split()[1], 16)
    assert not ignored & (1 << (signal.SIGPIPE - 1) | 1 << (signal.SIGXFSZ - 1)), f"{ignored:x}"
