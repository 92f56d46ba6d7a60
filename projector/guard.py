"""The guard against wiping the target: a change that would empty it, or remove more files than
``--max-removed`` allows, is held back.

consul-template's users report blank output after a Consul restore or a mistaken delete (its issues #21,
#727, #1131, #1713): a server given an empty certificate directory fails its next reload. Here such a
change does not reach the disk: the live files stay, nothing is signalled, and the freshness timestamp
stops moving, so the staleness alert fires. The change is not remembered as refused: each later change
is judged on its own, against what the target holds then (the key table keeps the whole of etcd's
state, so the next change that would leave files goes through).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limit:
    """``--max-removed``: at most ``count`` files, or ``count`` percent of the live ones."""

    count: int
    percent: bool = False

    def allows(self, removed: int, live: int) -> bool:
        return removed * 100 <= self.count * live if self.percent else removed <= self.count

    def __str__(self) -> str:
        return f"{self.count}%" if self.percent else str(self.count)


@dataclass(frozen=True)
class Guard:
    allow_empty: bool = False
    max_removed: Limit | None = None

    def judge(self, live: int, removed: int, left: int) -> str | None:
        """Why a change that takes ``live`` files to ``left`` by removing ``removed`` is held back, or
        None when it may go through."""
        if left == 0 and live and not self.allow_empty:
            return (
                f"holding back a change that would remove all {live} files and leave the target empty; "
                "keeping the live files (--allow-empty lets such a change through)"
            )
        if self.max_removed is not None and not self.max_removed.allows(removed, live):
            return (
                f"holding back a change that would remove {removed} of {live} files, more than "
                f"--max-removed={self.max_removed}; keeping the live files (a larger --max-removed lets "
                "it through)"
            )
        return None
