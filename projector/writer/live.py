"""What the live generation holds, indexed so that a change costs what it touches.

``files`` maps every live path to its content's digest. ``LiveIndex`` also counts the files under each
top-level directory, so the top-level names that a change brings (a link to make) and takes away (a
link to remove) are known from the changed paths alone, without a pass over the tree. A flat prefix
of 50,000 keys needs no second table: only directories are counted.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..paths import top_name


class LiveIndex:
    """The live generation's files (path -> digest) and how many live under each top-level directory."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self._below: dict[str, int] = {}  # top-level directory -> files below it
        for path in files:
            top = top_name(path)
            if top != path:
                self._below[top] = self._below.get(top, 0) + 1

    def under(self, top: str) -> int:
        """How many live files a top-level name stands for: 1 for a file, those below a directory."""
        return self._below.get(top) or int(top in self.files)

    def names_changed(
        self, effective: Mapping[str, bytes | None]
    ) -> tuple[dict[str, int], set[str], set[str]]:
        """For changes (path -> digest, None to remove): how many files each touched top-level name
        will stand for, the names they bring and the names they take away."""
        counts: dict[str, int] = {}
        before: dict[str, int] = {}  # what each touched name stands for now: asked once per name
        for path, new in effective.items():
            top = top_name(path)
            if top not in before:
                counts[top] = before[top] = self.under(top)
            counts[top] += (new is not None) - (path in self.files)
        appear = {top for top, count in counts.items() if count and not before[top]}
        vanish = {top for top, count in counts.items() if not count and before[top]}
        return counts, appear, vanish

    def links_to_fix(self, counts: Mapping[str, int], ours: set[str]) -> tuple[set[str], set[str]]:
        """The first change since start, given how many files each name it touches will stand for: the
        links to make (names that will be there, without our link) and to remove (ours, for names that
        will not be)."""
        names = {top for top in map(top_name, self.files) if top not in counts}
        names |= {top for top, count in counts.items() if count}
        return names - ours, ours - names

    def census(self, changes: Mapping[str, bytes | None], found: set[str] | None) -> tuple[int, int]:
        """How many live files ``changes`` remove, and how many the target holds after them; ``found``:
        the files found at start, which the first change removes unless it names them."""
        removed = added = 0
        for path, new in changes.items():
            if path in self.files:
                removed += new is None
            else:
                added += new is not None
        if found:
            removed += sum(1 for path in found if path not in changes)
        return removed, len(self.files) - removed + added

    def record(self, effective: Mapping[str, bytes | None]) -> None:
        """The changes went live."""
        for path, new in effective.items():
            top, was = top_name(path), path in self.files
            if new is None:
                self.files.pop(path, None)
            else:
                self.files[path] = new
            if top != path:
                count = self._below.get(top, 0) - was + (new is not None)
                if count:
                    self._below[top] = count
                else:
                    self._below.pop(top, None)
