"""One projection step: batches -> key table -> a generation on disk, as one transaction.

``Projection.apply(batches)`` takes the batches into the key table, which answers with a plan (what
changes, with the bytes to write); the writer makes the plan into a candidate generation (``--check``
sees it before the swap), and, once it is live, the step records what the files hold: the key table
commits the plan (forgets what is on disk), the ledger (the freshness check's receiving side) and the
metrics learn the revision. It answers with an :class:`Applied` (the outcome, and why a write failed);
what to do next (tell the command, retry a failed write) is the dispenser's. Pure of threads and etcd:
the dispenser calls it under its lock, from whichever thread has the turn.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .batches import Batch, Confirmation, Position
from .decoding import Decoding
from .guard import Guard
from .hooks import Hooks
from .keys import Selection
from .keytable import KeyTable
from .ledger import Ledger
from .metrics import Metrics
from .rendering import KeysApart, RenderError, Rendering
from .settings import Options
from .writer import Rejected, WriteError, Writer

log = logging.getLogger(__name__)


class Outcome(enum.Enum):
    SWAPPED = "a new generation went live"
    UNCHANGED = "the target already held it"
    FAILED = "writing failed; the live generation stays"
    REJECTED = "--check refused the candidate; the live generation stays"
    HELD = "the guard held back a change that would empty the target or remove too much"
    UNRENDERED = "a template failed to render; the live generation stays"


@dataclass(frozen=True)
class Applied:
    """What one step did, and for a failed write or a held change, why (one line)."""

    outcome: Outcome
    why: str | None = None


class Projection:
    """The key table, the writer, the ledger and the hooks of one target."""

    def __init__(self, options: Options, hooks: Hooks, metrics: Metrics) -> None:
        self.target = options.target
        self.hooks = hooks
        self.metrics = metrics
        self.writer = Writer(options.target, options.ownership, fsync=options.fsync)
        selection = Selection(options.include, options.exclude)
        self.templates = Rendering(options.template, options.template_only, metrics)
        reserved = set() if options.template_only else self.templates.dests
        keys = KeyTable(options.prefix, selection, Decoding(options.decode), reserved, bool(options.template))
        self.table = keys
        self._view = self.writer if not options.template_only else KeysApart(keys)
        self.ledger = Ledger(metrics)
        self.guard = Guard(options.allow_empty, options.max_removed)
        self.required = options.require
        self._checked = bool(options.check)
        self._missing: list[str] | None = None  # required paths last found missing

    def apply(self, batches: Iterable[Batch]) -> Applied:
        """Bring the target to the state of the key table and ``batches``."""
        for batch in batches:
            if batch.edited:
                self.templates.reload(batch.edited)
            self.table.absorb(batch, self._view)
        plan = self.table.plan(self._view)
        self.metrics.rejected_keys.set(self.table.refused)
        self.ledger.lagging()
        try:
            changes, contents = self.templates.merge(plan, self.table.values, self.table.revision)
        except RenderError as exc:
            return Applied(Outcome.UNRENDERED, str(exc))  # the plan stays: rendered again with the next
        held = self.guard.judge(len(self.writer.files), *self.writer.census(changes))
        if held is not None:
            return Applied(Outcome.HELD, held)  # the plan stays: the next change is judged with it
        accept = self._check if self._checked else None
        try:
            swapped = self.writer.apply(changes, contents, accept)
        except WriteError as exc:
            return Applied(Outcome.FAILED, str(exc))  # the plan stays: the retry writes it
        except Rejected:
            return Applied(Outcome.REJECTED)  # values stay held; the next change is tried again
        self.table.commit(plan)
        self.ledger.written(Position(self.table.revision, self.table.count))
        self.metrics.applied_revision.set(self.table.revision)
        if not swapped:
            log.debug("revision %s: nothing changed on disk", self.table.revision)
            return Applied(Outcome.UNCHANGED)
        self.metrics.generations.inc()
        return Applied(Outcome.SWAPPED)

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
