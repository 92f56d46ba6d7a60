"""The plain data that crosses from the etcd side to the rest, with no grpc in it: batches of keys, and
what the freshness check compares and reports. The key table, the ledger and their tests import this,
not the modules that talk to etcd."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Batch:
    """Keys and their new values (None: deleted) at ``revision``; a snapshot replaces everything."""

    revision: int
    changes: Mapping[bytes, bytes | None]
    snapshot: bool = False
    edited: tuple[Path, ...] = ()  # --template sources edited on disk: no keys, the templates anew


@dataclass(frozen=True)
class Position:
    """What the files on disk hold: etcd's state at ``revision``, ``keys`` keys under the prefix."""

    revision: int
    keys: int


@dataclass(frozen=True)
class Confirmation:
    """etcd's state at ``revision`` was read at ``at`` (Unix time); ``current``: the files hold it."""

    revision: int
    at: float
    current: bool
