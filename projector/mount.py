"""Where a key lands in the target: each ``--prefix`` is a mount, its keys under its directory (the
target's top without ``PREFIX=DIR``) at their relative paths, or, with ``--item KEY=PATH`` (Kubernetes'
``items``), only the chosen keys, each at its chosen path under that directory.

The key table asks this room for a key's place (its path, and the rank of its mount: the order of the
``--prefix`` flags, which decides between two keys that land on one path) and, for a log line, which
key a path holds. Every rule about hostile names stays in keys.py (a chosen PATH and DIR passed them
when the flags were read); prefixes never overlap (the settings refuse it), so a key has one mount.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .keys import relative_path

UNCHOSEN = "\0unchosen"  # the place of a key that no --item names: NUL is in no valid path


@dataclass(frozen=True)
class Mount:
    """A prefix, the directory its keys land under ("" for the top), and its items (key below the
    prefix -> path below the directory); no items: every key."""

    prefix: bytes
    items: tuple[tuple[bytes, str], ...] = ()
    directory: str = ""
    _paths: dict[bytes, str] = field(init=False, repr=False, compare=False)
    _keys: dict[str, bytes] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_paths", dict(self.items))
        object.__setattr__(self, "_keys", {path: key for key, path in self.items})

    def path(self, key: bytes) -> str:
        """The path of ``key`` (which is under the prefix) in the target; ``UNCHOSEN`` for a key the
        items leave out; :class:`~.keys.RefusedKey` for a name that cannot be a path."""
        if self.items:
            path = self._paths.get(key[len(self.prefix) :])
            if path is None:
                return UNCHOSEN
        else:
            path = relative_path(key, self.prefix)
        return f"{self.directory}/{path}" if self.directory else path

    def key(self, path: str) -> bytes:
        """The key whose value ``path`` (in the target) holds."""
        below = path[len(self.directory) + 1 :] if self.directory else path
        return self.prefix + (self._keys[below] if self.items else below.encode())


class Mounts:
    """Every mount of one target, in the order given: a key's mount and rank (0 for the first)."""

    def __init__(self, mounts: Mount | Sequence[Mount]) -> None:
        self.all = (mounts,) if isinstance(mounts, Mount) else tuple(mounts)

    def __len__(self) -> int:
        return len(self.all)

    def place(self, key: bytes) -> tuple[str, int]:
        """The key's path (or ``UNCHOSEN``) and its mount's rank; :class:`~.keys.RefusedKey`."""
        if len(self.all) == 1:
            return self.all[0].path(key), 0
        for rank, mount in enumerate(self.all):
            if key.startswith(mount.prefix):
                return mount.path(key), rank
        return relative_path(key, self.all[0].prefix), 0  # raises: the key is under no prefix

    def key(self, path: str, rank: int = 0) -> bytes:
        return self.all[rank].key(path)
