"""The command line, validated: every flag's rules, and the options the rest of the program reads."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from signal import Signals
from typing import Annotated, NoReturn

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError

from .values import (
    UsageError,
    directory_mode,
    first_error,
    normalize_prefix,
    parse_address,
    parse_duration,
    parse_mode,
    parse_signal,
    resolve_group,
    resolve_owner,
)

LOG_LEVELS = ("debug", "info", "warning", "error")


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is a :class:`UsageError` (one line) instead of a usage block."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _interval(text: object) -> object:
    if not isinstance(text, str):
        return text
    seconds = parse_duration(text)
    if seconds < 0.1:
        raise ValueError(f"{text!r} is too short; at least 100ms")
    return seconds


@dataclass(frozen=True)
class Ownership:
    """Mode and owner of every projected file; ``None`` ids keep the process's own."""

    mode: int = 0o600
    uid: int | None = None
    gid: int | None = None

    @property
    def directory_mode(self) -> int:
        return directory_mode(self.mode)


class Options(BaseModel):
    """The command line, validated. Field aliases are the flag names used in error messages."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    prefix: Annotated[bytes, BeforeValidator(normalize_prefix)]
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
    command: list[str] = []

    @property
    def ownership(self) -> Ownership:
        return Ownership(self.mode, self.owner, self.group)


def load_options(**flags: object) -> Options:
    """Validate parsed flags; the first error becomes a :class:`UsageError` naming its flag."""
    try:
        return Options.model_validate(flags)
    except ValidationError as exc:
        raise UsageError(first_error(exc, lambda field: "--" + field.replace("_", "-"))) from None
