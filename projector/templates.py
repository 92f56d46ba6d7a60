"""Templates rendered into the same generation as the projected files (``--template SRC=DEST``).

confd and consul-template render each file on its own, with no transaction boundary: a template can
render half of a transaction, and two files can show two revisions. Here a template is rendered from
the key table's values at the revision the generation is made for, and its output is one more file of
that generation: one transaction, one swap, one signal, and ``--check`` sees the rendered files.

Jinja2's sandboxed environment renders (autoescape off, ``StrictUndefined``: a missing key fails the
render instead of writing an empty string). A template sees ``keys`` (path -> value: text, or bytes
where not UTF-8), ``get(path, default)``, ``ls(dir)`` (the names directly below a directory),
``tree(dir)`` (path below it -> value), ``b64decode``, ``from_json``, ``to_json`` and ``revision``;
nothing of the environment, the files or the network. What each render reads is recorded (the paths,
the directories listed, or everything when it iterates ``keys``), and a change re-renders only the
templates whose inputs it touches.

A template that does not parse is a usage error at start. A render that fails later (a missing key,
bad JSON, an output over ``MAX_OUTPUT``) raises :class:`RenderFailed`, whose one line names the template,
its line and the revision, never a value; the projection keeps the live generation and tries again at
the next change.
"""

from __future__ import annotations

import base64
import json
import traceback
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, UndefinedError
from jinja2 import Template as Compiled
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .paths import directories_above

MAX_OUTPUT = 16 * 1024 * 1024


class RenderFailed(Exception):
    """A render that failed; the message is one line, with no value in it."""


SOURCE = "<template>"  # the file name Jinja2 gives a template made from a string: its frames' name


@dataclass
class Inputs:
    """What one render read: paths, directories listed (``ls``, ``tree``), or everything."""

    paths: set[str] = field(default_factory=set)
    directories: set[str] = field(default_factory=set)
    everything: bool = False


class _Keys(Mapping[str, Any]):
    """The values as a template sees them, recording what it reads."""

    def __init__(self, values: Mapping[str, bytes], inputs: Inputs) -> None:
        self._values = values
        self._inputs = inputs

    def __getitem__(self, path: str) -> Any:
        self._inputs.paths.add(path)
        if path not in self._values:  # (Jinja's own message would name this class, not the key)
            raise UndefinedError(f"no key at {path!r}")
        return _text(self._values[path])

    def get(self, path: str, default: Any = None) -> Any:
        self._inputs.paths.add(path)
        return _text(self._values[path]) if path in self._values else default

    def __contains__(self, path: object) -> bool:
        if isinstance(path, str):
            self._inputs.paths.add(path)
        return path in self._values

    def __iter__(self) -> Iterator[str]:
        self._inputs.everything = True
        return iter(sorted(self._values))

    def __len__(self) -> int:
        self._inputs.everything = True
        return len(self._values)


def _text(value: bytes) -> str | bytes:
    try:
        return value.decode()
    except UnicodeDecodeError:
        return value


class Template:
    """One ``--template``: its source, its destination in the target, and what it last read."""

    def __init__(self, environment: ImmutableSandboxedEnvironment, source: Path, dest: str) -> None:
        self.source, self.dest = source, dest
        self.environment = environment
        self.compiled = self._parse()
        self.broken: str | None = None  # why the file, edited, no longer parses
        self.inputs: Inputs | None = None  # None until it rendered once: due

    def _parse(self) -> Compiled:
        try:
            text = self.source.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            why = getattr(exc, "strerror", None) or exc
            raise ValueError(f"cannot read {str(self.source)!r}: {why}") from None
        try:
            return self.environment.from_string(text)
        except TemplateSyntaxError as exc:
            raise ValueError(f"{self.source}:{exc.lineno}: {exc.message}") from None

    def reload(self) -> None:
        """The file was edited: parse it again; one that no longer parses fails each render until it does."""
        try:
            self.compiled, self.broken = self._parse(), None
        except ValueError as exc:
            self.broken = str(exc)
        self.inputs = None

    def render(self, values: Mapping[str, bytes], revision: int) -> bytes:
        if self.broken is not None:
            raise RenderFailed(f"template {self.broken} (edited), at revision {revision}")
        inputs = Inputs()
        keys = _Keys(values, inputs)

        def get(path: str, default: Any = None) -> Any:
            return keys.get(path, default)

        def listed(directory: str) -> list[str]:
            directory = directory.strip("/")
            inputs.directories.add(directory)
            below = f"{directory}/" if directory else ""
            return sorted({p[len(below) :].split("/")[0] for p in values if p.startswith(below)})

        def tree(directory: str) -> dict[str, Any]:
            directory = directory.strip("/")
            inputs.directories.add(directory)
            below = f"{directory}/" if directory else ""
            return {p[len(below) :]: _text(v) for p, v in sorted(values.items()) if p.startswith(below)}

        helpers = {
            "keys": keys,
            "get": get,
            "ls": listed,
            "tree": tree,
            "b64decode": lambda text: base64.b64decode(text).decode("utf-8", "replace"),
            "from_json": json.loads,
            "to_json": json.dumps,
            "revision": revision,
        }
        try:
            output: bytes = self.compiled.render(helpers).encode()
        except Exception as exc:
            raise RenderFailed(self._failure(exc, revision)) from None
        if len(output) > MAX_OUTPUT:
            size = f"{len(output)} bytes at revision {revision}, more than {MAX_OUTPUT}"
            raise RenderFailed(f"template {self.source} renders {size}")
        self.inputs = inputs
        return output

    def _failure(self, exc: Exception, revision: int) -> str:
        lines = [
            frame.lineno for frame in traceback.extract_tb(exc.__traceback__) if frame.filename == SOURCE
        ]
        where = f" (line {lines[-1]})" if lines else ""
        # Messages that name no value: a missing key's name, the kind of a JSON error, Jinja's own.
        known = isinstance(exc, UndefinedError | TemplateError | json.JSONDecodeError)
        what = (
            f"{type(exc).__name__}: {exc.msg if isinstance(exc, json.JSONDecodeError) else exc}"
            if known
            else type(exc).__name__
        )
        return f"template {self.source}{where} failed at revision {revision}: {what}"


class Templates:
    """Every ``--template``, parsed at start (a ``ValueError`` names the bad one), and an index of what
    each last read, so that a change finds the templates it touches in what it changed alone (1,000
    templates are not asked one by one)."""

    def __init__(self, specs: Iterable[tuple[Path, str]]) -> None:
        environment = ImmutableSandboxedEnvironment(
            undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True
        )
        self.all = [Template(environment, source, dest) for source, dest in specs]
        self.dests = {template.dest for template in self.all}
        self.renders = 0  # renders so far, for the metrics and the tests
        self._due = set(range(len(self.all)))  # never rendered, edited, or failed: rendered at any change
        self._readers: dict[str, set[int]] = {}  # path -> the templates that read it
        self._listers: dict[str, set[int]] = {}  # directory -> the templates that listed it
        self._everything: set[int] = set()  # the templates that iterated ``keys``

    def __bool__(self) -> bool:
        return bool(self.all)

    def reload(self, sources: Iterable[Path]) -> None:
        """Templates edited on disk: parsed again, and rendered at the change this is part of."""
        edited = {source.resolve() for source in sources}
        for index, template in enumerate(self.all):
            if template.source.resolve() in edited:
                template.reload()
                self._due.add(index)

    def render(
        self, values: Mapping[str, bytes], revision: int, changed: Iterable[str] | None
    ) -> dict[str, bytes]:
        """The output of each template whose inputs ``changed`` touches (None: every one), or
        :class:`RenderFailed` for the first that fails."""
        chosen = set(range(len(self.all))) if changed is None else self._touched(changed)
        outputs: dict[str, bytes] = {}
        for index in sorted(chosen):
            template = self.all[index]
            self.renders += 1
            before = template.inputs
            try:
                outputs[template.dest] = template.render(values, revision)
            except RenderFailed:
                self._due.add(index)
                raise
            self._due.discard(index)
            self._index(index, before, template.inputs)
        return outputs

    def _touched(self, changed: Iterable[str]) -> set[int]:
        chosen = set(self._due)
        for path in changed:
            chosen |= self._everything
            chosen.update(self._readers.get(path, ()))
            if self._listers:
                for directory in ("", *directories_above(path)):
                    chosen.update(self._listers.get(directory, ()))
        return chosen

    def _index(self, index: int, before: Inputs | None, after: Inputs | None) -> None:
        for inputs, change in ((before, _drop), (after, _add)):
            if inputs is None:
                continue
            for path in inputs.paths:
                change(self._readers, path, index)
            for directory in inputs.directories:
                change(self._listers, directory, index)
        self._everything.discard(index)
        if after is not None and after.everything:
            self._everything.add(index)


def _add(table: dict[str, set[int]], key: str, index: int) -> None:
    table.setdefault(key, set()).add(index)


def _drop(table: dict[str, set[int]], key: str, index: int) -> None:
    indices = table.get(key)
    if indices is not None:
        indices.discard(index)
        if not indices:
            del table[key]
