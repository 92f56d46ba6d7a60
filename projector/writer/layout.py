"""The target's layout: its reserved names, what a generation is, and the file-system helpers the
writer's rooms share.

Kubernetes' AtomicWriter layout::

    target/..2026_11_24_16_15_51.123456789/   one generation: the complete tree
    target/..data -> ..2026_11_24_16_15_51.123456789
    target/name -> ..data/name                one link per top-level name
    target/..2026_11_24_16_15_51.200417553/   the next generation, made ahead (``Writer.prepare``)
    target/..blanks/                          empty files for the next change's files (blanks.py)
    target/..data_tmp.<hex> -> ...            the link that a swap renames over ..data, for a moment

Every name starting with ``..`` belongs to the layout (keys.py refuses such keys). A generation is named
for the UTC time (with nanoseconds) when it went live, so names sort by age; one made ahead, or being
reused, carries the time it was made or taken until then. What to remove is always computed from names this
package made or recognised by their pattern, never by walking paths a user could have planted links in.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from ..settings import Ownership

DATA_LINK = "..data"
TEMP_LINK_PREFIX = "..data_tmp."
GENERATION_PATTERN = re.compile(r"\.\.\d{4}(?:_\d{2}){5}\.\d{9}")
BLANKS_DIRECTORY = "..blanks"
NOT_REUSABLE = b""  # the digest of an indexed file whose mode or owner is not the wanted one

log = logging.getLogger(__name__)

# The process's umask, read once at import (before any thread): reading it means setting it.
UMASK = os.umask(0o077)
os.umask(UMASK)


class WriteError(Exception):
    """Writing a generation failed; the live generation is untouched. The message names the path."""


class Rejected(Exception):
    """The candidate generation was refused by the check; the live one is untouched."""


@dataclass(slots=True)
class Generation:
    """What the writer knows of one generation directory.

    ``epoch`` says what it holds: what the live generation held after that many swaps (the writer keeps
    the files of the live generation alone, and which paths each swap changed: candidates.History).
    ``directories`` maps each directory ("" is the generation itself) to its modification time as this
    writer left it, which is how an entry added or removed by anyone else is noticed before the
    generation is reused; None for a generation found on disk at start, which is never reused.
    """

    name: str
    directories: dict[str, int] | None
    epoch: int = 0
    stale_since: float = 0.0
    # With per-file modes or owners: each directory's mode as set, and how many files below it each
    # readable class (group, others) has, and how many belong to someone else: what decides that mode.
    modes: dict[str, int] = field(default_factory=dict)
    readers: dict[str, list[int]] = field(default_factory=dict)


def generation_names() -> Iterator[str]:
    """Names for a generation, from the current time on, one nanosecond apart."""
    for stamp in itertools.count(time.time_ns()):
        seconds, nanos = divmod(stamp, 1_000_000_000)
        yield datetime.fromtimestamp(seconds, UTC).strftime("..%Y_%m_%d_%H_%M_%S.") + f"{nanos:09d}"


def is_generation(entry: os.DirEntry[str]) -> bool:
    return bool(GENERATION_PATTERN.fullmatch(entry.name)) and entry.is_dir(follow_symlinks=False)


def open_directory(path: str, parent: int | None = None) -> int:
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)


def fsync_directory(path: str, parent: int | None = None) -> None:
    fd = open_directory(path, parent)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def close_below(fd: int, root: int | None) -> None:
    """Close a directory opened below ``root``; ``root`` itself stands for "" and stays open."""
    if fd != root:
        os.close(fd)


def own_directory(fd: int, ownership: Ownership, mode: int | None = None) -> None:
    """The directory's mode (``ownership.directory_mode`` unless given) and owner: mkdir's mode is
    filtered by the umask, and both are the contract."""
    os.fchmod(fd, ownership.directory_mode if mode is None else mode)
    if ownership.uid is not None or ownership.gid is not None:
        os.fchown(fd, keep(ownership.uid), keep(ownership.gid))


def keep(value: int | None) -> int:
    """An id for chown, where -1 keeps the current one."""
    return -1 if value is None else value


def create_file(directory: int, name: str, owner: tuple[int | None, int | None], mode: int) -> int:
    """A new, empty file, opened for writing, with its mode and owner (uid, gid) already set: no reader
    ever sees looser permissions than asked for."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(name, flags, mode, dir_fd=directory)
    try:
        if mode & UMASK:  # the mode given to open(2) is filtered by the umask
            os.fchmod(fd, mode)
        if owner != (None, None):
            os.fchown(fd, keep(owner[0]), keep(owner[1]))
    except OSError:
        os.close(fd)
        raise
    return fd


def write_all(fd: int, data: bytes, fsync: bool) -> None:
    written = os.write(fd, data)
    if written < len(data):  # a short write: rare, and then the rest without copies
        view = memoryview(data)[written:]
        while view:
            view = view[os.write(fd, view) :]
    if fsync:
        os.fsync(fd)


def remove_tree(path: str, quiet: bool = False) -> bool:
    """Remove a directory tree; whether it is gone."""
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.log(
            logging.DEBUG if quiet else logging.WARNING,
            "cannot remove %s: %s",
            os.path.basename(path),
            exc.strerror,
        )
        return False
    return True


def describe(exc: OSError, where: Path) -> str:
    name = exc.filename if isinstance(exc.filename, str) else str(where)
    return f"{exc.strerror or exc}: {name}"
