"""A child for end-to-end tests: records its start and every signal, with what it reads at that moment.

Usage: child_recorder.py TARGET RECORD_FILE. Each record is one JSON line:
{"event": "start"|"SIGHUP"|..., "pid": ..., "at": time, "files": {path: text}, "env": [names]}.
The files are read through ``..data`` resolved once, as a careful reader would ("files" is null if
that generation went away while it was read). SIGTERM records and
exits with $CHILD_TERM_EXIT (default 0). $CHILD_SETUP_DELAY (seconds) delays taking signals (and the
"start" record), as a program that sets its handlers late: until then a signal has its default action.
"""

import json
import os
import signal
import sys
import time

target, record_path = sys.argv[1], sys.argv[2]


def read_generation() -> dict[str, str] | None:
    data = os.path.join(target, "..data")
    try:
        root = os.path.join(target, os.readlink(data))
    except OSError:
        return {}
    files = {}
    try:
        for dirpath, _dirs, names in os.walk(root, onerror=gone):
            for name in names:
                path = os.path.join(dirpath, name)
                with open(path, "rb") as handle:
                    files[os.path.relpath(path, root)] = handle.read().decode("utf-8", "replace")
    except (FileNotFoundError, NotADirectoryError):
        return None
    return files


def gone(error: OSError) -> None:
    """os.walk would skip a directory it cannot list: a read of a generation that went away is none."""
    raise error


def record(event: str) -> None:
    line = json.dumps(
        {
            "event": event,
            "pid": os.getpid(),
            "at": time.time(),
            "files": read_generation(),
            "env": sorted(os.environ),
        }
    )
    with open(record_path, "a") as handle:
        handle.write(line + "\n")


SIGNALS = {
    signal.SIGHUP,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGWINCH,
    signal.SIGQUIT,
    signal.SIGINT,
    signal.SIGTERM,
}
# The signals are blocked and taken one at a time with sigwaitinfo: a handler and a pause() loop would
# lose a signal that arrives after the handler's last check and before pause(2) blocks (and then wait
# for the next one forever).
time.sleep(float(os.environ.get("CHILD_SETUP_DELAY", "0")))
signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
record("start")
while True:
    signum = signal.sigwaitinfo(SIGNALS).si_signo
    record(signal.Signals(signum).name)
    if signum == signal.SIGTERM:
        sys.exit(int(os.environ.get("CHILD_TERM_EXIT", "0")))
