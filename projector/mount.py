"""Where a key lands in the target: every key under the prefix at its relative path, or, with
``--item KEY=PATH`` (Kubernetes' ``items``), only the chosen keys, each at its chosen path.

The key table asks this room for a key's path and, for a log line, a path's key; every rule about
hostile names stays in keys.py (a chosen PATH passed them when the flag was read).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .keys import relative_path


@dataclass(frozen=True)
class Mount:
    """A prefix and its items (key below the prefix -> path in the target); no items: every key."""

    prefix: bytes
    items: tuple[tuple[bytes, str], ...] = ()
    _paths: dict[bytes, str] = field(init=False, repr=False, compare=False)
    _keys: dict[str, bytes] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_paths", dict(self.items))
        object.__setattr__(self, "_keys", {path: key for key, path in self.items})

    def path(self, key: bytes) -> str | None:
        """The path of ``key`` (which is under the prefix) in the target; None for a key the items leave
        out; :class:`~.keys.RefusedKey` for a name that cannot be a path."""
        if not self.items:
            return relative_path(key, self.prefix)
        return self._paths.get(key[len(self.prefix) :])

    def key(self, path: str) -> bytes:
        """The key whose value ``path`` holds."""
        return self.prefix + (self._keys[path] if self.items else path.encode())
