"""Each signal's fate, in one table: what the dispenser does with a signal it receives, with a command
and without one (as tini's ``signals_for_tini`` and consul-template's one ``switch`` state it).

README's table under "The child" is this table, row for row (a test holds them equal). The code reads
it too: inbox.py listens to every signal named here, supervisor.py arms ``--stop-timeout`` for those
that stop, and ``received`` ends the run or logs the signal when no command is there to take it.
Signals the table does not name keep their default action (``SIGKILL``, ``SIGSTOP`` cannot be
caught; ``SIGCHLD`` only means that a process is to be reaped).
"""

from __future__ import annotations

import logging
import signal
from typing import NamedTuple

log = logging.getLogger(__name__)


class Fate(NamedTuple):
    signal: signal.Signals
    stops: bool  # whether it ends the run
    with_command: str
    without_command: str


FORWARD = "forwarded to the command's pid"
FORWARD_AND_STOP = (
    "forwarded; the dispenser waits for the command, ends with its status (`SIGKILL` after `--stop-timeout`)"
)
STOP = "the dispenser exits 0"
IGNORE = "ignored, with one log line saying so"

TABLE = (
    Fate(signal.SIGHUP, False, FORWARD, IGNORE),
    Fate(signal.SIGINT, True, FORWARD_AND_STOP, STOP),
    Fate(signal.SIGQUIT, True, FORWARD_AND_STOP, STOP),
    Fate(signal.SIGTERM, True, FORWARD_AND_STOP, STOP),
    Fate(signal.SIGUSR1, False, FORWARD, IGNORE),
    Fate(signal.SIGUSR2, False, FORWARD, IGNORE),
    Fate(signal.SIGWINCH, False, FORWARD, IGNORE),
    Fate(signal.SIGABRT, False, FORWARD, IGNORE),
)

HANDLED = tuple(fate.signal for fate in TABLE)
STOPPING = frozenset(fate.signal for fate in TABLE if fate.stops)


def received(signum: int, command: bool) -> int | None:
    """A signal that reached the main thread, not forwarded (no command runs, or it is not started
    yet): the exit status it ends the run with, or None when it is ignored."""
    name = signal.Signals(signum).name
    if signum in STOPPING:
        log.info("received %s; exiting", name)
        return 128 + signum if command else 0
    log.info("received %s; ignored: no command is running to forward it to", name)
    return None


def markdown() -> list[str]:
    """The table as README shows it."""
    rows = ["| signal | with a command | without one |", "| --- | --- | --- |"]
    rows += [f"| `{f.signal.name}` | {f.with_command} | {f.without_command} |" for f in TABLE]
    return rows
