"""Whether a process can take a signal yet: what Linux shows of it in ``/proc/<pid>/``.

A program that has not yet set its handler (an interpreter starting, nginx's master or PostgreSQL's
postmaster in their first milliseconds, a shell script before its ``trap``) still has the signal's
default action, which for ``SIGHUP`` and most others is to die. The kernel shows the signals a process
catches, ignores and blocks in its main thread (a program that takes signals with ``signalfd`` or
``sigwaitinfo`` blocks them). In any of the three a signal sent is taken, not fatal. While a
thread waits in ``sigwaitinfo`` the kernel unblocks the signals it waits for, so that no mask shows
them: ``/proc/<pid>/task/<tid>/wchan`` then names the wait (``do_sigtimedwait``), and that counts too.

Except a block of every signal: that is how a shell (dash), glibc's ``posix_spawn``, Go and CPython
guard a fork, for microseconds, and a signal sent then is fatal the moment the block is lifted (a
dispenser in front of ``sh -c 'touch ready; exec sleep 60'`` killed it so). A process that blocks every
signal counts as taking one only while one of its threads waits for signals; a program that blocks
them all for good and reads them from a ``signalfd`` gets its signal once the start grace is over.

For the classic signals (1 to 31) the masks are read from ``/proc/<pid>/stat`` (fields 32 to 34, in
decimal), which the kernel makes in about 12 us against 45 us for ``/proc/<pid>/status`` (``SigBlk``,
``SigIgn``, ``SigCgt``, which also show the real-time signals): this read is on the way from a commit
to the signal (docs/benchmarks.md).
"""

from __future__ import annotations

import functools
import os

MASKS = (b"SigBlk:", b"SigIgn:", b"SigCgt:")
STAT_MASKS = slice(29, 32)  # blocked, sigignore, sigcatch: fields 32-34, counted after comm's ")"
CLASSIC = 32  # the signals below this are in /proc/<pid>/stat's masks
UNBLOCKABLE = (9, 19)  # SIGKILL, SIGSTOP
EVERY = sum(1 << (n - 1) for n in range(1, CLASSIC) if n not in UNBLOCKABLE)  # a fork guard's block


@functools.cache
def available() -> bool:
    """Whether this system shows signal dispositions (Linux with /proc mounted)."""
    return b"SigCgt:" in _read("/proc/self/status")


def takes(pid: int, signum: int) -> bool | None:
    """Whether process ``pid`` catches, ignores or blocks ``signum`` (or waits for signals); None if
    that cannot be read (the process is gone, or /proc shows nothing)."""
    masks = _stat_masks(pid) if signum < CLASSIC else _status_masks(pid)
    if not masks:
        return None
    blocked, ignored, caught = masks
    bit = 1 << (signum - 1)
    guarding = blocked & EVERY == EVERY  # a fork guard, lifted in microseconds
    if (ignored | caught) & bit or (blocked & bit and not guarding):
        return True
    return _waits_for_signals(pid)


def command_line(pid: int) -> bytes:
    """The process's argv as the kernel shows it (NUL after each argument); empty if it is gone."""
    return _read(f"/proc/{pid}/cmdline")


def as_command_line(argv: list[str]) -> bytes:
    """``argv`` as ``/proc/<pid>/cmdline`` shows it."""
    return b"".join(os.fsencode(arg) + b"\0" for arg in argv)


def _waits_for_signals(pid: int) -> bool:
    """Whether one of the process's threads waits in ``sigwaitinfo`` (or ``sigtimedwait``)."""
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return False
    return any(b"sigtimedwait" in _read(f"/proc/{pid}/task/{tid}/wchan") for tid in threads)


def _stat_masks(pid: int) -> list[int]:
    fields = _read(f"/proc/{pid}/stat").rpartition(b")")[2].split()[STAT_MASKS]
    return [int(field) for field in fields] if len(fields) == len(MASKS) else []


def _status_masks(pid: int) -> list[int]:
    lines = _read(f"/proc/{pid}/status").splitlines()
    return [int(line.split(b":", 1)[1], 16) for line in lines if line.startswith(MASKS)]


def _read(path: str) -> bytes:
    """A small /proc file, whole (empty if it cannot be read), in one read(2) without a file object."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return b""
    try:
        return os.read(fd, 1 << 16)
    except OSError:
        return b""
    finally:
        os.close(fd)
