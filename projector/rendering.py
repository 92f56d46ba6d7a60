"""Templates in the projection step: what the writer gets when templates render into the generation.

``Rendering.merge`` turns the key table's plan into the writer's changes: the keys' changes (none with
``--template-only``) and the output of every template whose inputs they touch, with its digest. Jinja2
(templates.py) is loaded only when there are templates. With ``--template-only`` the keys never reach
the target, so the key table is given a view of it where no name is the operator's and every key's
bytes are its value in memory (:class:`KeysApart`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from .batches import Batch
from .digests import digest
from .keytable import KeyTable
from .metrics import Metrics
from .placement import Plan

if TYPE_CHECKING:
    from .templates import Templates

log = logging.getLogger(__name__)


class RenderError(Exception):
    """A template failed to render; the message is one line, with no value in it."""


class Rendering:
    def __init__(self, specs: tuple[tuple[Path, str], ...], only: bool, metrics: Metrics) -> None:
        self.only = only
        self.metrics = metrics
        self._templates: Templates | None = None
        if specs:
            from .templates import Templates

            self._templates = Templates(specs)

    @property
    def sources(self) -> list[Path]:
        return [] if self._templates is None else [t.source for t in self._templates.all]

    def reload(self, sources: tuple[Path, ...]) -> None:
        if self._templates is not None:
            self._templates.reload(sources)

    @property
    def dests(self) -> set[str]:
        return set() if self._templates is None else self._templates.dests

    def merge(
        self, plan: Plan, values: Mapping[str, bytes] | None, revision: int
    ) -> tuple[Mapping[str, bytes | None], Callable[[str], bytes]]:
        """The writer's changes and the bytes of each path it writes."""
        if self._templates is None:
            return plan.changes, plan.contents.__getitem__
        from .templates import RenderFailed

        assert values is not None
        before = self._templates.renders
        try:
            outputs = self._templates.render(values, revision, plan.changes.keys())
        except RenderFailed as exc:
            raise RenderError(str(exc)) from None
        finally:
            self.metrics.template_renders.value += self._templates.renders - before
        changes: dict[str, bytes | None] = {} if self.only else dict(plan.changes)
        changes.update((dest, digest(output)) for dest, output in outputs.items())
        held = plan.contents
        return changes, lambda path: outputs[path] if path in outputs else held[path]


class KeysApart:
    """The target as the key table sees it with ``--template-only``: keys are never written there."""

    def __init__(self, table: KeyTable) -> None:
        self._table = table

    def is_foreign(self, name: str) -> bool:
        return False

    def foreign_names(self) -> set[str]:
        return set()

    def read(self, path: str) -> bytes:
        assert self._table.values is not None
        return self._table.values[path]


def watch_sources(sources: list[Path], receive: Callable[[Batch], None], stopping: threading.Event) -> None:
    """The templates' thread: an edit of a template file (saved in place, or renamed over it as editors
    do) is delivered like a transaction, to be rendered into one generation with one signal."""
    import watchfiles

    logging.getLogger("watchfiles").setLevel(logging.INFO)  # (a debug line a second, else)
    wanted = {source.resolve() for source in sources}
    directories = {str(source.parent) for source in wanted}
    for changes in watchfiles.watch(
        *directories, stop_event=stopping, rust_timeout=1000, yield_on_timeout=False
    ):
        edited = tuple(sorted(path for _change, name in changes if (path := Path(name).resolve()) in wanted))
        if edited:
            log.info("templates edited on disk: %s", ", ".join(map(str, edited)))
            receive(Batch(0, {}, edited=edited))
