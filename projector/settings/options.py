"""The command line, validated: every flag's rules, and the options the rest of the program reads."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from signal import Signals
from typing import Annotated, NoReturn, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError, model_validator

from ..guard import Limit
from ..keys import RefusedKey, check_path
from ..mount import Mount
from .values import (
    UsageError,
    directory_mode,
    first_error,
    normalize_prefix,
    parse_address,
    parse_decode,
    parse_duration,
    parse_file_mode,
    parse_file_owner,
    parse_glob,
    parse_item,
    parse_max_removed,
    parse_mode,
    parse_signal,
    parse_template,
    parse_wait,
    resolve_group,
    resolve_owner,
)

LOG_LEVELS = ("debug", "info", "warning", "error")


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is a :class:`UsageError` (one line) instead of a usage block."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _each(parse: Callable[[str], object]) -> Callable[[object], object]:
    """A validator for a repeatable flag: ``parse`` for each value given."""
    return lambda values: tuple(parse(v) for v in values) if isinstance(values, list | tuple) else values


def _required(text: str) -> str:
    try:
        return check_path(text.strip("/") if text != "/" else "")
    except RefusedKey as refusal:
        raise ValueError(f"{text!r} {refusal}") from None


def _mounts(value: object) -> object:
    """``--prefix`` as given: one text, or texts with the ``--item`` texts that follow each."""
    if isinstance(value, str | bytes):
        value = [(value, [])]
    if not isinstance(value, list | tuple) or not all(isinstance(v, tuple) for v in value):
        return value
    mounts = tuple(_mount(text, items) for text, items in value)
    for index, mount in enumerate(mounts):
        for other in mounts[:index]:
            if mount.prefix == other.prefix:
                raise ValueError(f"{mount.prefix.decode()!r} is given twice")
            if mount.prefix.startswith(other.prefix) or other.prefix.startswith(mount.prefix):
                inner, outer = sorted((mount.prefix, other.prefix), key=len, reverse=True)
                raise ValueError(f"{outer.decode()!r} and {inner.decode()!r} overlap: a key under both")
    return mounts


def _mount(text: str | bytes, items: list[str]) -> Mount:
    """``PREFIX`` or ``PREFIX=DIR`` (split at the first ``=``), and its items."""
    prefix, _, directory = (text.decode() if isinstance(text, bytes) else text).partition("=")
    if directory:
        try:
            directory = check_path(directory.strip("/"))
        except RefusedKey as refusal:
            raise ValueError(f"the directory {directory!r} {refusal}") from None
    try:
        chosen = tuple(parse_item(item) for item in items)
    except ValueError as exc:
        raise ValueError(f"--item: {exc}") from None
    for index, (key, path) in enumerate(chosen):
        for other_key, other in chosen[:index]:
            if key == other_key:
                raise ValueError(f"--item: the key {key.decode()!r} is chosen twice")
            if f"{path}/".startswith(f"{other}/") or f"{other}/".startswith(f"{path}/"):
                raise ValueError(f"--item: the paths {other!r} and {path!r} collide")
    return Mount(normalize_prefix(prefix), chosen, directory)


def _limit(text: object) -> object:
    return Limit(*parse_max_removed(text)) if isinstance(text, str) else text


def _interval(text: object) -> object:
    if not isinstance(text, str):
        return text
    seconds = parse_duration(text)
    if seconds < 0.1:
        raise ValueError(f"{text!r} is too short; at least 100ms")
    return seconds


@dataclass(frozen=True)
class Ownership:
    """Mode and owner of the projected files: ``mode``, unless one of ``file_modes`` (glob, mode) matches
    a file's path first; ``uid`` and ``gid``, unless one of ``file_owners`` (glob, uid, gid) matches
    first (a None there keeps ``uid`` or ``gid``). ``None`` ids keep the process's own."""

    mode: int = 0o600
    uid: int | None = None
    gid: int | None = None
    file_modes: tuple[tuple[re.Pattern[str], int], ...] = ()
    file_owners: tuple[tuple[re.Pattern[str], int | None, int | None], ...] = ()

    def mode_of(self, path: str) -> int:
        for glob, mode in self.file_modes:
            if glob.match(path):
                return mode
        return self.mode

    def owner_of(self, path: str) -> tuple[int | None, int | None]:
        for glob, uid, gid in self.file_owners:
            if glob.match(path):
                return self.uid if uid is None else uid, self.gid if gid is None else gid
        return self.uid, self.gid

    @property
    def per_file(self) -> bool:
        """Whether files differ in mode or owner, so that each directory's mode follows its files."""
        return bool(self.file_modes or self.file_owners)

    @property
    def directory_mode(self) -> int:
        """The mode a directory is made with. When every file has ``mode`` and the one owner it is
        final: ``rwx`` for the owner, and read and search for whoever may read the files. Per file it is
        the owner's alone until the files below it are known (each gets what they need: fill.py)."""
        return 0o700 if self.per_file else directory_mode(self.mode)

    @property
    def target_mode(self) -> int:
        """The target's mode, when this tool creates it: what the most permissive file may need (and
        search for others when a file may belong to someone else)."""
        widest = self.mode
        for _glob, mode in self.file_modes:
            widest |= mode
        return directory_mode(widest) | (0o001 if self.file_owners else 0)


class Options(BaseModel):
    """The command line, validated. Field aliases are the flag names used in error messages."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    prefix: Annotated[tuple[Mount, ...], BeforeValidator(_mounts)]
    target: Path
    signal: Annotated[Signals | None, BeforeValidator(lambda v: v and parse_signal(v))] = None
    mode: Annotated[int, BeforeValidator(lambda v: parse_mode(v) if isinstance(v, str) else v)] = 0o600
    owner: Annotated[int | None, BeforeValidator(lambda v: v and resolve_owner(v))] = None
    group: Annotated[int | None, BeforeValidator(lambda v: v and resolve_group(v))] = None
    once: bool = False
    fsync: bool = False
    log_level: str = "info"
    log_format: str = "text"
    check: str | None = None
    on_change: str | None = None
    metrics_address: Annotated[tuple[str, int] | None, BeforeValidator(lambda v: v and parse_address(v))] = (
        None
    )
    confirm_interval: Annotated[float, BeforeValidator(_interval)] = 10.0
    include: Annotated[tuple[re.Pattern[str], ...], BeforeValidator(_each(parse_glob))] = ()
    exclude: Annotated[tuple[re.Pattern[str], ...], BeforeValidator(_each(parse_glob))] = ()
    file_mode: Annotated[
        tuple[tuple[re.Pattern[str], int], ...], BeforeValidator(_each(parse_file_mode))
    ] = ()
    decode: Annotated[tuple[tuple[re.Pattern[str], str], ...], BeforeValidator(_each(parse_decode))] = ()
    file_owner: Annotated[
        tuple[tuple[re.Pattern[str], int | None, int | None], ...], BeforeValidator(_each(parse_file_owner))
    ] = ()
    require: Annotated[tuple[str, ...], BeforeValidator(_each(_required))] = ()
    template: Annotated[tuple[tuple[Path, str], ...], BeforeValidator(_each(parse_template))] = ()
    template_only: bool = False
    wait: Annotated[tuple[float, float] | None, BeforeValidator(lambda v: v and parse_wait(v))] = None
    restart: bool = False
    allow_empty: bool = False
    max_removed: Annotated[Limit | None, BeforeValidator(_limit)] = None
    stop_timeout: Annotated[
        float, BeforeValidator(lambda v: parse_duration(v) if isinstance(v, str) else v)
    ] = 10.0
    start_grace: Annotated[
        float, BeforeValidator(lambda v: parse_duration(v) if isinstance(v, str) else v)
    ] = 10.0
    command: list[str] = []

    @model_validator(mode="after")
    def _templates_parse(self) -> Self:
        dests = [dest for _source, dest in self.template]
        for index, dest in enumerate(dests):
            for other in dests[:index]:
                if f"{dest}/".startswith(f"{other}/") or f"{other}/".startswith(f"{dest}/"):
                    raise ValueError(f"--template: the destinations {other!r} and {dest!r} collide")
        if self.template_only and not self.template:
            raise ValueError("--template-only: give the templates to render with --template SRC=DEST")
        if not self.template:
            return self
        from ..templates import Templates  # Jinja2, loaded only for templates

        try:
            Templates(self.template)
        except ValueError as exc:
            raise ValueError(f"--template: {exc}") from None
        return self

    @model_validator(mode="after")
    def _one_way_to_tell(self) -> Self:
        if self.restart and self.signal is not None:
            raise ValueError("--restart: the command is restarted instead of signalled; drop --signal")
        return self

    @property
    def ownership(self) -> Ownership:
        return Ownership(self.mode, self.owner, self.group, self.file_mode, self.file_owner)


def load_options(**flags: object) -> Options:
    """Validate parsed flags; the first error becomes a :class:`UsageError` naming its flag."""
    try:
        return Options.model_validate(flags)
    except ValidationError as exc:
        raise UsageError(first_error(exc, lambda field: "--" + field.replace("_", "-"))) from None
