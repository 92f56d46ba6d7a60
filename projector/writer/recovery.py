"""What a restart finds in the target, and what survives a crash.

A generation goes live only by the rename over ``..data`` (swap.py), so after a crash the target
holds exactly one whole live generation, plus perhaps what was being made when the process died:
temporary links, blank files, generations that ``..data`` does not point to. ``open_target`` removes
those, and indexes the live generation by content, so that a file torn by a power loss differs from
etcd and is rewritten by the first change.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from ..digests import hasher
from ..settings import Ownership
from .layout import (
    BLANKS_DIRECTORY,
    DATA_LINK,
    GENERATION_PATTERN,
    NOT_REUSABLE,
    TEMP_LINK_PREFIX,
    Generation,
    WriteError,
    describe,
    is_generation,
    open_directory,
    own_directory,
    remove_tree,
)
from .links import our_names

log = logging.getLogger(__name__)


@dataclass
class Found:
    """The target as a restart finds it, once cleaned: the live generation (None: there is none yet),
    its files (path -> digest of the content), and the top-level links this tool made
    (``name -> ..data/name``)."""

    live: Generation | None
    files: dict[str, bytes]
    links: set[str]


def open_target(target: Path, ownership: Ownership) -> Found:
    """Create the target if missing, clean crash leftovers, and index the live generation."""
    try:
        _create_target(target, ownership)
        name = _live_generation(target)
        _remove_leftovers(target, name)
        live = None if name is None else Generation(name, None)
        files = {} if name is None else _index(target / name, ownership)
        return Found(live, files, our_names(target))
    except OSError as exc:
        raise WriteError(describe(exc, target)) from None


def _create_target(target: Path, ownership: Ownership) -> None:
    if target.is_dir():
        return
    target.mkdir(parents=True, mode=ownership.target_mode)
    fd = open_directory(str(target))
    try:
        own_directory(fd, ownership, ownership.target_mode)
    finally:
        os.close(fd)


def _live_generation(target: Path) -> str | None:
    try:
        name = os.readlink(target / DATA_LINK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            raise OSError(errno.EEXIST, f"{DATA_LINK} exists and is not a link", DATA_LINK) from None
        raise
    # A link we did not write (elsewhere, or not a generation) is replaced by the first swap.
    if GENERATION_PATTERN.fullmatch(name) and (target / name).is_dir():
        return name
    log.warning("%s points to %r, which is not a generation; it will be replaced", DATA_LINK, name)
    return None


def _remove_leftovers(target: Path, live: str | None) -> None:
    for entry in os.scandir(target):
        if entry.name.startswith(TEMP_LINK_PREFIX) and entry.is_symlink():
            os.unlink(entry.path)
        elif entry.name == BLANKS_DIRECTORY:
            remove_tree(entry.path)
        elif is_generation(entry) and entry.name != live:
            # Names sort by time: one newer than the live generation never went live.
            unfinished = live is None or entry.name > live
            kind = "unfinished" if unfinished else "old"
            log.info("removing %s generation %s left by an earlier run", kind, entry.name)
            remove_tree(entry.path)


def _index(generation: Path, ownership: Ownership) -> dict[str, bytes]:
    """The digest of every file in a generation; anything odd inside, or a file with another mode
    or owner, gets a digest that differs from every value, so that it is rewritten."""
    files: dict[str, bytes] = {}
    for root, dirs, names in os.walk(generation):
        for name in names + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            path = os.path.join(root, name)
            relative = os.path.relpath(path, generation)
            owner = ownership.owner_of(relative)
            files[relative] = _indexed_digest(path, ownership.mode_of(relative), owner)
    return files


def _indexed_digest(path: str, mode: int, owner: tuple[int | None, int | None]) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return NOT_REUSABLE
    try:
        st = os.fstat(fd)
        if not (
            stat.S_ISREG(st.st_mode)
            and stat.S_IMODE(st.st_mode) == mode
            and owner[0] in (None, st.st_uid)
            and owner[1] in (None, st.st_gid)
        ):
            return NOT_REUSABLE
        content = hasher()
        while chunk := os.read(fd, 1 << 20):
            content.update(chunk)
        return content.digest()
    finally:
        os.close(fd)
