"""etcd keys to safe relative paths: every rule about hostile keys, and which keys are selected.

A key's path is what follows the prefix (``/certs/`` for ``--prefix=/certs``). A path is accepted only if
it cannot name anything outside the target and cannot collide with the on-disk layout, so the writer can
join it to a generation directory without further checks. Refused keys are reported with a reason and the
key itself (escaped for logs), never its value.

Conflicts between valid keys (``a`` and ``a/b``: the file ``a`` wins, whatever the order) and with the
operator's own files are the key table's to decide (keytable.py), as keys come and go.

The operator's ``--include`` and ``--exclude`` globs (:class:`Selection`) leave keys out before any of
that: an excluded key is not refused (no warning), just not there for this dispenser.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_SEGMENT_BYTES = 255
MAX_PATH_BYTES = 4096
RESERVED_PREFIX = ".."  # the layout's own names: ..data, ..<timestamp>, ..data_tmp.*


class RefusedKey(ValueError):
    """A key that cannot be projected; the message says why."""


def relative_path(key: bytes, prefix: bytes) -> str:
    """The path below the target for ``key`` (which starts with ``prefix``), or :class:`RefusedKey`."""
    if not key.startswith(prefix):
        raise RefusedKey("is not under the prefix")
    raw = key[len(prefix) :]
    if not raw:
        raise RefusedKey("has an empty name")
    if b"\0" in raw:
        raise RefusedKey("contains a NUL byte")
    if len(raw) > MAX_PATH_BYTES:
        raise RefusedKey(f"is longer than {MAX_PATH_BYTES} bytes")
    try:
        path = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise RefusedKey("is not valid UTF-8") from None
    return check_path(path)


def check_path(path: str) -> str:
    """``path`` if it is a safe path below the target, else :class:`RefusedKey`."""
    for segment in path.split("/"):
        _check_segment(segment)
    return path


def _check_segment(segment: str) -> None:
    if not segment:
        raise RefusedKey("has an empty path segment (a leading, doubled or trailing '/')")
    if segment in (".", ".."):
        raise RefusedKey(f"has a {segment!r} segment")
    if segment.startswith(RESERVED_PREFIX):
        raise RefusedKey(f"has a segment starting with {RESERVED_PREFIX!r}, reserved for the layout")
    # (UTF-8 takes at most 4 bytes a character: most segments are short enough not to need encoding)
    if len(segment) > MAX_SEGMENT_BYTES // 4 and len(segment.encode()) > MAX_SEGMENT_BYTES:
        raise RefusedKey(f"has a segment longer than {MAX_SEGMENT_BYTES} bytes")


@dataclass(frozen=True)
class Selection:
    """Which valid paths are projected: those matching an ``include`` glob (or any, when there is none)
    and no ``exclude`` glob."""

    include: tuple[re.Pattern[str], ...] = ()
    exclude: tuple[re.Pattern[str], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.include or self.exclude)

    def selects(self, path: str) -> bool:
        if self.include and not any(glob.match(path) for glob in self.include):
            return False
        return not any(glob.match(path) for glob in self.exclude)


class Excluded:
    """The keys the selection leaves out, by path and by their prefix's rank (two prefixes' keys may
    share a path): names only, never values, and how many keys they are."""

    def __init__(self) -> None:
        self.ranks: dict[str, int] = {}  # path -> the ranks of its keys, as bits
        self.count = 0

    def __contains__(self, path: object) -> bool:
        return path in self.ranks

    def add(self, path: str, rank: int) -> bool:
        """Whether the key is new."""
        ranks = self.ranks.get(path, 0)
        if ranks >> rank & 1:
            return False
        self.ranks[path] = ranks | 1 << rank
        self.count += 1
        return True

    def discard(self, path: str, rank: int) -> bool:
        """Whether the key was there."""
        ranks = self.ranks.get(path, 0)
        if not ranks >> rank & 1:
            return False
        ranks &= ~(1 << rank)
        if ranks:
            self.ranks[path] = ranks
        else:
            del self.ranks[path]
        self.count -= 1
        return True

    def keys_of(self, path: str) -> list[int]:
        """The ranks of the excluded keys on ``path``."""
        ranks = self.ranks[path]
        return [rank for rank in range(ranks.bit_length()) if ranks >> rank & 1]


def printable(key: bytes) -> str:
    """A key for a log line: control characters and invalid UTF-8 escaped, so it cannot forge lines."""
    text = key.decode("utf-8", "backslashreplace")
    return repr(text)
