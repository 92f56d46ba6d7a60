"""Keeping the etcd credentials with the dispenser, out of reach of the command it runs.

The command never inherits them (settings.child_environment), but a process can read another's initial
environment in ``/proc/<pid>/environ``: the block the kernel laid out at exec, which changing
``os.environ`` does not touch. An nginx compromised through a request, running as root without
CAP_SYS_PTRACE or as our own user, could read our ``ETCD_PASSWORD`` there. So once the settings are
read, ``hide_credentials``:

- overwrites the values of the secret variables in that block with NUL bytes (in place: the C
  library's ``environ`` points into it; a value's length is all that is left), and drops them from
  ``os.environ``; the settings hold what is needed, in our own memory;
- marks the process non-dumpable (``PR_SET_DUMPABLE`` 0): no core file with secrets after a crash,
  and no process of the same user may read our memory or attach to us. The process itself still
  reads its own ``/proc/self``.
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Iterable

PR_SET_DUMPABLE = 4  # <linux/prctl.h>

log = logging.getLogger(__name__)


def hide_credentials(names: Iterable[str]) -> None:
    """Overwrite the values of ``names`` (any case) in our initial environment, forget them in
    ``os.environ``, and make the process non-dumpable."""
    hidden = {name.upper() for name in names}
    for name in [name for name in os.environ if name.upper() in hidden]:
        del os.environ[name]
    try:
        _blank_initial_environment(hidden)
    except (OSError, ValueError) as exc:  # not Linux, or /proc not mounted: nothing there to read either
        log.debug("cannot overwrite the initial environment: %s", exc)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        log.debug("cannot make the process non-dumpable: %s", os.strerror(ctypes.get_errno()))


def _blank_initial_environment(hidden: set[str]) -> None:
    start, end = _environment_block()
    block = ctypes.string_at(start, end - start)
    offset = 0
    for entry in block.split(b"\0"):
        name, equals, value = entry.partition(b"=")
        if equals and value and name.decode(errors="replace").upper() in hidden:
            ctypes.memset(start + offset + len(name) + 1, 0, len(value))
        offset += len(entry) + 1


def _environment_block() -> tuple[int, int]:
    """The addresses of our initial environment block: fields 50 and 51 of /proc/self/stat."""
    with open("/proc/self/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()  # fields from the 3rd on: the name may hold spaces
    start, end = int(fields[50 - 3]), int(fields[51 - 3])
    if not 0 < start < end:
        raise ValueError("no environment block in /proc/self/stat")
    return start, end
