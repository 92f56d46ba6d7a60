"""Whether a process can take a signal yet: what Linux shows of it in ``/proc/<pid>/status``.

A program that has not yet set its handler (an interpreter starting, nginx's master or PostgreSQL's
postmaster in their first milliseconds, a shell script before its ``trap``) still has the signal's
default action, which for ``SIGHUP`` and most others is to die. The status file shows, as hexadecimal
masks, the signals a process catches (``SigCgt``), ignores (``SigIgn``) and blocks in its main thread
(``SigBlk``: a program that takes signals with ``signalfd`` or ``sigwaitinfo`` blocks them). In any of
the three a signal sent is taken, not fatal. While its main thread waits in ``sigwaitinfo`` the kernel
unblocks the signals it waits for, so that none of the masks shows them: ``/proc/<pid>/wchan`` then
names the wait (``do_sigtimedwait``), and that counts as taking them too. Reading the file costs a few
microseconds.
"""

from __future__ import annotations

import functools
import os

MASKS = (b"SigBlk:", b"SigIgn:", b"SigCgt:")


@functools.cache
def available() -> bool:
    """Whether this system shows signal dispositions (Linux with /proc mounted)."""
    try:
        with open("/proc/self/status", "rb") as status:
            return b"SigCgt:" in status.read()
    except OSError:
        return False


def takes(pid: int, signum: int) -> bool | None:
    """Whether process ``pid`` catches, ignores or blocks ``signum``; None if that cannot be read
    (the process is gone, or /proc shows nothing)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            text = status.read()
    except OSError:
        return None
    bit = 1 << (signum - 1)
    found = False
    for line in text.splitlines():
        if line.startswith(MASKS):
            found = True
            if int(line.split(b":", 1)[1], 16) & bit:
                return True
    return (b"sigtimedwait" in _waiting_in(pid)) if found else None


def _waiting_in(pid: int) -> bytes:
    """The kernel function the process's main thread sleeps in (empty if that is not shown)."""
    try:
        with open(f"/proc/{pid}/wchan", "rb") as wchan:
            return wchan.read()
    except OSError:
        return b""


def command_line(pid: int) -> bytes | None:
    """The process's argv as the kernel shows it (NUL after each argument); None if gone."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return cmdline.read()
    except OSError:
        return None


def as_command_line(argv: list[str]) -> bytes:
    """``argv`` as ``/proc/<pid>/cmdline`` shows it."""
    return b"".join(os.fsencode(arg) + b"\0" for arg in argv)
