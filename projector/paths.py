"""Paths in the target, as the key table and the writer both see them: a path's top-level name (what
one link in the target stands for) and the directories above it. Each costs a ``find`` per level, not
a split, because both are on the way of every changed key."""

from __future__ import annotations

from collections.abc import Iterable, Iterator


def top_name(path: str) -> str:
    """A path's top-level name: the path itself when it has no directory (the same string, not a copy)."""
    end = path.find("/")
    return path if end < 0 else path[:end]


def directories_above(path: str) -> Iterable[str]:
    """``a`` and ``a/b`` for ``a/b/c``."""
    end = path.find("/")
    if end < 0:
        return ()  # most keys: no generator to make
    return _directories_from(path, end)


def _directories_from(path: str, end: int) -> Iterator[str]:
    while end >= 0:
        yield path[:end]
        end = path.find("/", end + 1)
