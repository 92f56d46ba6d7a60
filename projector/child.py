"""The supervised child: start it, signal it, reap it, and turn its end into our exit status.

What a PID-1 supervisor owes its child (as tini and dumb-init do it): the child gets its own process
group and, on a terminal we own, the foreground, so that the terminal's Ctrl-C reaches it once, not twice;
signals go to the child's pid only, never to a process group of which unrelated processes could be part;
every zombie is reaped, not only the child's; and a child killed by signal N becomes exit status 128+N.
Outside a container (not PID 1) we make ourselves a child subreaper, as tini -s does, so that the
child's orphans are still ours to reap rather than init's. And the child gets SIGKILL when we die
(Linux's parent-death signal, set by launch.py), so that killing us (the OOM killer, ``docker kill``)
does not leave a command running that a restarted dispenser would start a second time.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys

from . import dispositions, launch

PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>


class StartError(Exception):
    """The command could not be started; ``status`` is the exit status to end with."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class Child:
    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.argv = argv
        self.env = env
        self.pid: int | None = None
        self._launcher: bytes | None = None  # launch.py's command line, until it has become the command
        # Held so that subprocess never reaps the child behind our back (it polls Popen objects it
        # finds unreferenced); we reap with waitpid(-1) instead and record the status here.
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the command, through launch.py so that it dies with us. Only from the main thread: the
        parent-death signal follows the thread that started the process, and ours lives as long as we do."""
        _become_subreaper()
        program = shutil.which(self.argv[0], path=self.env.get("PATH", os.defpath))
        if program is None:
            exists = os.path.sep in self.argv[0] and os.path.exists(self.argv[0])
            why, status = ("permission denied", launch.NOT_EXECUTABLE)
            if not exists:
                why, status = "no such file or command", launch.NOT_FOUND
            raise StartError(f"cannot start {self.argv[0]!r}: {why}", status)
        argv = [*_launcher(), str(os.getpid()), program, *self.argv[1:]]
        try:
            process = subprocess.Popen(argv, env=self.env, process_group=0)
        except OSError as exc:
            why = f"cannot start {self.argv[0]!r}: {exc.strerror}"
            raise StartError(why, launch.NOT_EXECUTABLE) from None
        self._process, self.pid = process, process.pid
        self._launcher = dispositions.as_command_line(argv)
        _give_terminal(process.pid)

    def takes(self, sig: int) -> bool | None:
        """Whether the command catches, ignores or blocks ``sig`` now (dispositions.py); False while
        launch.py has not yet replaced itself with the command (its dispositions are not the
        command's); None if that cannot be read."""
        if self.pid is None:
            return None
        if self._launcher is not None:
            if dispositions.command_line(self.pid) == self._launcher:
                return False
            self._launcher = None  # exec(2) happened: from now on the process is the command
        return dispositions.takes(self.pid, sig)

    def signal(self, sig: int) -> None:
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def reap(self) -> int | None:
        """Collect every exited process; the child's exit status (128+N for signal N) once it is gone."""
        code = reap_all().get(self.pid) if self.pid is not None else None
        if code is None or self._process is None:
            return None
        self._process.returncode, self.pid = code, None
        return 128 - code if code < 0 else code


def reap_all() -> dict[int, int]:
    """Reap every exited process (as PID 1, orphans too); pid -> exit code, -N for signal N."""
    reaped: dict[int, int] = {}
    while True:
        try:
            pid, wait_status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return reaped
        if pid == 0:
            return reaped
        reaped[pid] = os.waitstatus_to_exitcode(wait_status)


def _launcher() -> list[str]:
    """How to run launch.py: by this interpreter (isolated: no site, no PYTHON* variables), or by the
    single-file executable, which is its own interpreter."""
    if getattr(sys, "frozen", False):
        return [sys.executable, launch.LAUNCH]
    return [sys.executable, "-I", "-S", launch.__file__]


def _become_subreaper() -> None:
    """Orphans of the child's tree are reparented to us, not to init (Linux; harmless elsewhere)."""
    if os.getpid() == 1:
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _give_terminal(pgid: int) -> None:
    """Hand the terminal's foreground to the child's group, if the terminal's foreground is ours."""
    try:
        fd = sys.stdin.fileno()
        if not os.isatty(fd) or os.tcgetpgrp(fd) != os.getpgrp():
            return
    except (OSError, ValueError):
        return
    # tcsetpgrp from a group that is about to lose the foreground would stop us with SIGTTOU.
    previous = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    try:
        os.tcsetpgrp(fd, pgid)
    except OSError:
        pass
    finally:
        signal.signal(signal.SIGTTOU, previous)
