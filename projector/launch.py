"""Start a command that dies with the dispenser: set SIGKILL as its parent-death signal, then exec it.

Linux's parent-death signal must be set by the child itself, between fork and exec. Python can run code
there only through ``subprocess``'s ``preexec_fn``, which forks the whole process, gRPC's threads and
fork handlers included: 1 start in 100 died before exec here, and gRPC's poller lost its descriptors.
So the dispenser starts the command through this small program instead (spawned without a fork of
ours), which sets the signal and replaces itself with the command: the command keeps its pid. Python
ignores SIGPIPE and SIGXFSZ from its start, and exec(2) keeps what is ignored: both are given back
their default action first, as a shell would start the command (else a pipeline in it never ends on
SIGPIPE).

Run as ``python -I -S launch.py PARENT COMMAND [ARGS...]``, or by the single-file executable with
``LAUNCH`` as its first argument. Only the standard library, and nothing imported that need not be.
"""

import ctypes
import os
import signal
import sys

LAUNCH = "--launch-child-of"  # what the single-file executable recognises (packaging/entry.py)
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
SIGKILL = 9
NOT_FOUND, NOT_EXECUTABLE = 127, 126  # what a shell exits with; operators know them (child.py too)


def launch(argv: list[str]) -> None:
    """``argv``: the dispenser's pid, then the command. Does not return."""
    parent, command = int(argv[0]), argv[1:]
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the dispenser died before the signal was set
        os._exit(NOT_EXECUTABLE)
    for restored in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(restored, signal.SIG_DFL)
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        print(f"etcd-config-dispenser: cannot start {command[0]!r}: {exc.strerror}", file=sys.stderr)
        os._exit(NOT_FOUND if isinstance(exc, FileNotFoundError) else NOT_EXECUTABLE)


if __name__ == "__main__":
    launch(sys.argv[1:])
