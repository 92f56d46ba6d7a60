"""One projection step: batches -> key table -> a generation on disk, as one transaction.

``Projection.apply(batches)`` takes the batches into the key table, has the writer make what changed
into a candidate generation (``--check`` sees it before the swap), and, once it is live, records what
the files hold: the key table forgets what is on disk, the ledger (the freshness check's receiving
side) and the metrics learn the revision. It answers with an :class:`Outcome`; what to do next (tell
the command, retry a failed write) is the dispenser's. Pure of threads and etcd: the dispenser calls it
under its lock, from whichever thread has the turn.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable
from pathlib import Path

from .batches import Batch, Confirmation, Position
from .hooks import Hooks
from .keys import Selection
from .keytable import KeyTable
from .ledger import Ledger
from .metrics import Metrics
from .settings import Options
from .writer import Rejected, WriteError, Writer

log = logging.getLogger(__name__)


class Outcome(enum.Enum):
    SWAPPED = "a new generation went live"
    UNCHANGED = "the target already held it"
    FAILED = "writing failed; the live generation stays"
    REJECTED = "--check refused the candidate; the live generation stays"


class Projection:
    """The key table, the writer, the ledger and the hooks of one target."""

    def __init__(self, options: Options, hooks: Hooks, metrics: Metrics) -> None:
        self.target = options.target
        self.hooks = hooks
        self.metrics = metrics
        self.writer = Writer(options.target, options.ownership, fsync=options.fsync)
        self.table = KeyTable(options.prefix, self.writer, Selection(options.include, options.exclude))
        self.ledger = Ledger(metrics)
        self.required = options.require
        self.error: WriteError | None = None  # why the last apply failed
        self._checked = bool(options.check)
        self._missing: list[str] | None = None  # required paths last found missing

    def apply(self, batches: Iterable[Batch]) -> Outcome:
        """Bring the target to the state of the key table and ``batches``."""
        for batch in batches:
            self.table.absorb(batch)
        changes = self.table.changes()
        self.metrics.rejected_keys.set(self.table.refused)
        self.ledger.lagging()
        try:
            swapped = self.writer.apply(changes, self.table.value, self._check if self._checked else None)
        except WriteError as exc:
            self.error = exc
            return Outcome.FAILED
        except Rejected:
            return Outcome.REJECTED  # values stay held; the next change is tried again
        self.table.written()
        self.ledger.written(Position(self.table.revision, self.table.count))
        self.metrics.applied_revision.set(self.table.revision)
        if not swapped:
            log.debug("revision %s: nothing changed on disk", self.table.revision)
            return Outcome.UNCHANGED
        self.metrics.generations.inc()
        return Outcome.SWAPPED

    def _check(self, candidate: Path) -> bool:
        return self.hooks.check(candidate, self.table.revision)

    def on_change(self) -> None:
        """Run ``--on-change`` on the live generation."""
        self.hooks.on_change(self.target / str(self.writer.generation), self.table.revision)

    def status(self) -> str:
        generation, files = self.writer.generation, len(self.writer.files)
        return f"STATUS=revision {self.table.revision}: generation {generation} is live ({files} files)"

    def required_there(self) -> bool:
        """Whether every ``--require`` path is projected (a file, or a directory holding one); one log
        line names those that are not, and one says when they are."""
        files = self.writer.files
        missing = [
            path
            for path in self.required
            if path not in files and not any(f.startswith(path + "/") for f in files)
        ]
        if missing and self._missing is None:
            log.info("waiting for %s before going on: not in etcd yet", ", ".join(missing))
        elif not missing and self._missing:
            log.info("every required file is there")
        self._missing = missing
        return not missing

    # -- the freshness check's side (settled is read without the lock: one attribute) ------------------------

    def settled(self) -> Position | None:
        return self.ledger.settled

    def confirmed(self, confirmation: Confirmation) -> None:
        self.ledger.confirmed(confirmation)
