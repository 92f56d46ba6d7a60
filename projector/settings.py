"""User input as validated models: the command-line options and the ``ETCD_*`` environment.

Every rule about what a user may pass lives here. A rule that fails raises :class:`UsageError` with one
line that names the flag or variable; nothing else in the program validates user input.
"""

from __future__ import annotations

import argparse
import grp
import os
import pwd
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from signal import Signals
from typing import Annotated, NoReturn
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from . import INHERITED_GRPC_VERBOSITY

DEFAULT_ENDPOINT = "127.0.0.1:2379"  # the scheme follows the TLS settings
DEFAULT_PORT = 2379
UNCATCHABLE = frozenset({signal.SIGKILL, signal.SIGSTOP})

# Environment variables that hold secrets: the child never inherits them, in either form.
SECRET_VARIABLES = ("ETCD_PASSWORD", "ETCD_USERNAME_AND_PASSWORD", "ETCD_CLIENT_KEY")


class UsageError(Exception):
    """A user's input is wrong; the message is one line that names what is wrong."""


LOG_LEVELS = ("debug", "info", "warning", "error")


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is a :class:`UsageError` (one line) instead of a usage block."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def parse_mode(text: str) -> int:
    """``600``, ``0640`` and ``0o640`` are all octal file modes."""
    digits = text.strip().lower().removeprefix("0o")
    try:
        mode = int(digits, 8)
    except ValueError:
        raise ValueError(f"{text!r} is not an octal mode such as 600 or 0640") from None
    if not 0 <= mode <= 0o777:
        raise ValueError(f"{text!r} is outside 000..777")
    return mode


def parse_signal(text: str) -> signal.Signals:
    """A catchable signal by name (``SIGHUP``, ``hup``, any case) or by number."""
    word = text.strip()
    try:
        sig = signal.Signals(int(word)) if word.isdigit() else signal.Signals[_signal_name(word)]
    except (KeyError, ValueError):
        raise ValueError(f"{text!r} is not a signal name or number") from None
    if sig in UNCATCHABLE:
        raise ValueError(f"{sig.name} cannot be caught by the child, so it cannot mean 'files changed'")
    return sig


def _signal_name(word: str) -> str:
    name = word.upper()
    return name if name.startswith("SIG") else "SIG" + name


def resolve_owner(text: str) -> int:
    """A user name or numeric uid; only root may give files to another user."""
    uid = _resolve_id(text, lambda name: pwd.getpwnam(name).pw_uid, "user")
    if os.geteuid() != 0 and uid != os.geteuid():
        raise ValueError(f"only root can give files to another user than uid {os.geteuid()}")
    return uid


def resolve_group(text: str) -> int:
    """A group name or numeric gid; without root only one's own groups are allowed."""
    gid = _resolve_id(text, lambda name: grp.getgrnam(name).gr_gid, "group")
    if os.geteuid() != 0 and gid != os.getegid() and gid not in os.getgroups():
        raise ValueError(f"only root can give files to a group it is not a member of (gid {gid})")
    return gid


def _resolve_id(text: str, lookup: Callable[[str], int], kind: str) -> int:
    word = text.strip()
    if word.isdigit():
        return int(word)
    try:
        return lookup(word)
    except KeyError:
        raise ValueError(f"no {kind} named {word!r}") from None


DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds from ``500ms``, ``2s``, ``1.5m``, ``1h``; a bare number is seconds."""
    word = text.strip().lower()
    number, unit = word, "s"
    for suffix in sorted(DURATION_UNITS, key=len, reverse=True):
        if word.endswith(suffix):
            number, unit = word[: -len(suffix)], suffix
            break
    try:
        seconds = float(number) * DURATION_UNITS[unit]
    except ValueError:
        raise ValueError(f"{text!r} is not a duration such as 500ms, 2s or 1m") from None
    if not 0 <= seconds < float("inf"):
        raise ValueError(f"{text!r} is not a duration such as 500ms, 2s or 1m")
    return seconds


def _interval(text: object) -> object:
    if not isinstance(text, str):
        return text
    seconds = parse_duration(text)
    if seconds < 0.1:
        raise ValueError(f"{text!r} is too short; at least 100ms")
    return seconds


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9100`` for IPv6; an empty host listens on every address)."""
    host, colon, port = text.rpartition(":")
    if not colon or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def normalize_prefix(text: str) -> bytes:
    """The prefix names a directory: ``/certs`` and ``/certs/`` are the same, ``/certsX`` is outside it."""
    if not text:
        raise ValueError("must not be empty (use / for every key that starts with /)")
    return text.rstrip("/").encode() + b"/"


def directory_mode(file_mode: int) -> int:
    """Directories: rwx for the owner, and read plus search for whoever may read the files."""
    readable = file_mode & 0o044
    return 0o700 | readable | (readable >> 2)


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
        raise UsageError(_first_error(exc, lambda field: "--" + field.replace("_", "-"))) from None


# ---------------------------------------------------------------------------------------------------------
# The ETCD_* environment


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    @property
    def netloc(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Tls:
    """TLS material as PEM bytes; ``server_ca`` None means the system's roots."""

    server_ca: bytes | None = None
    client_cert: bytes | None = None
    client_key: bytes | None = None
    insecure_skip_verify: bool = False


@dataclass(frozen=True)
class EtcdConfig:
    """How to reach etcd: what :mod:`projector.source` needs, and nothing of how it was spelled."""

    endpoints: tuple[Endpoint, ...]
    tls: Tls | None = None
    username: str | None = None
    password: str | None = None

    def describe(self) -> str:
        """For logs: never a password."""
        return ",".join(self.url(e) for e in self.endpoints)

    def url(self, endpoint: Endpoint) -> str:
        return f"{'https' if self.tls else 'http'}://{endpoint.netloc}"


_FILE_BACKED = (
    "endpoints",
    "username",
    "password",
    "username_and_password",
    "insecure_skip_verify",
    "server_ca",
    "client_cert",
    "client_key",
)


class EtcdEnvironment(BaseSettings):
    """The raw ``ETCD_*`` variables; each may instead be given as ``NAME_FILE``, a path to read it from."""

    model_config = SettingsConfigDict(
        env_prefix="ETCD_", case_sensitive=False, env_ignore_empty=True, extra="ignore"
    )

    endpoints: str | None = None
    username: str | None = None
    password: str | None = None
    username_and_password: str | None = None
    insecure_skip_verify: str | None = None
    server_ca: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    endpoints_file: Path | None = None
    username_file: Path | None = None
    password_file: Path | None = None
    username_and_password_file: Path | None = None
    insecure_skip_verify_file: Path | None = None
    server_ca_file: Path | None = None
    client_cert_file: Path | None = None
    client_key_file: Path | None = None

    @model_validator(mode="after")
    def _read_files(self) -> EtcdEnvironment:
        for name in _FILE_BACKED:
            path = getattr(self, name + "_file")
            if path is None:
                continue
            if getattr(self, name) is not None:
                raise ValueError(f"{_var(name)} and {_var(name)}_FILE are both set; keep one")
            try:
                text = path.read_text().removesuffix("\n")
            except (OSError, UnicodeDecodeError) as exc:
                raise ValueError(f"{_var(name)}_FILE: cannot read {str(path)!r}: {_reason(exc)}") from None
            setattr(self, name, text or None)
        return self


def _var(field: str) -> str:
    return "ETCD_" + field.upper()


def _reason(exc: Exception) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__


def load_etcd_config() -> EtcdConfig:
    """Read and check the ``ETCD_*`` environment."""
    try:
        return _etcd_config(EtcdEnvironment())
    except ValidationError as exc:
        raise UsageError(_first_error(exc, _var)) from None
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _etcd_config(env: EtcdEnvironment) -> EtcdConfig:
    username, password = _credentials(env)
    tls = _tls(env)
    endpoints, schemes = _endpoints(env.endpoints or DEFAULT_ENDPOINT)
    if schemes == {"http", "https"}:
        raise ValueError("ETCD_ENDPOINTS mixes http:// and https:// endpoints")
    if "https" in schemes and tls is None:
        tls = Tls()
    if "http" in schemes and tls is not None:
        raise ValueError("ETCD_ENDPOINTS uses http:// but TLS settings are given; use https://")
    return EtcdConfig(endpoints=endpoints, tls=tls, username=username, password=password)


def _credentials(env: EtcdEnvironment) -> tuple[str | None, str | None]:
    if env.username_and_password is not None:
        if env.username is not None or env.password is not None:
            raise ValueError("ETCD_USERNAME_AND_PASSWORD cannot be combined with ETCD_USERNAME/ETCD_PASSWORD")
        username, colon, password = env.username_and_password.partition(":")
        if not colon or not username or not password:
            raise ValueError("ETCD_USERNAME_AND_PASSWORD must be user:password")
        return username, password
    if (env.username is None) != (env.password is None):
        missing = "ETCD_PASSWORD" if env.password is None else "ETCD_USERNAME"
        raise ValueError(f"{missing} is not set, but the other half of the credentials is")
    return env.username, env.password


def _tls(env: EtcdEnvironment) -> Tls | None:
    insecure = _boolean(env.insecure_skip_verify, "ETCD_INSECURE_SKIP_VERIFY")
    if (env.client_cert is None) != (env.client_key is None):
        missing = "ETCD_CLIENT_KEY" if env.client_key is None else "ETCD_CLIENT_CERT"
        raise ValueError(f"{missing} is not set, but the other half of the client certificate is")
    pems = {name: _pem(getattr(env, name), _var(name)) for name in ("server_ca", "client_cert", "client_key")}
    if not insecure and all(v is None for v in pems.values()):
        return None
    return Tls(
        server_ca=pems["server_ca"],
        client_cert=pems["client_cert"],
        client_key=pems["client_key"],
        insecure_skip_verify=insecure,
    )


def _boolean(text: str | None, variable: str) -> bool:
    if text is None:
        return False
    word = text.strip().lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{variable} must be true or false")


def _pem(text: str | None, variable: str) -> bytes | None:
    if text is None:
        return None
    if "-----BEGIN " not in text:
        raise ValueError(f"{variable} is not PEM text (no '-----BEGIN' line)")
    return text.encode()


def _endpoints(text: str) -> tuple[tuple[Endpoint, ...], set[str]]:
    endpoints: list[Endpoint] = []
    schemes: set[str] = set()
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        scheme, sep, rest = item.partition("://")
        if not sep:
            scheme, rest = "", item
        elif scheme not in ("http", "https"):
            raise ValueError(f"ETCD_ENDPOINTS: {item!r} has scheme {scheme!r}; use http:// or https://")
        else:
            schemes.add(scheme)
        endpoints.append(_endpoint(rest.rstrip("/"), item))
    if not endpoints:
        raise ValueError("ETCD_ENDPOINTS names no endpoint")
    return tuple(endpoints), schemes


def _endpoint(hostport: str, item: str) -> Endpoint:
    try:
        parts = urlsplit("//" + hostport)
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise ValueError(f"ETCD_ENDPOINTS: {item!r} is not host:port") from None
    if not parts.hostname or parts.path or parts.query or parts.username:
        raise ValueError(f"ETCD_ENDPOINTS: {item!r} is not host:port")
    return Endpoint(parts.hostname, port)


def _first_error(exc: ValidationError, name_of: Callable[[str], str]) -> str:
    error = exc.errors()[0]
    message = str(error["msg"]).removeprefix("Value error, ")
    if not error["loc"]:
        return message
    return f"{name_of(str(error['loc'][0]))}: {message}"


def child_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Our environment as we were given it, without the etcd secrets, for the child."""
    source = dict(os.environ if environ is None else environ)
    if INHERITED_GRPC_VERBOSITY is None:
        source.pop("GRPC_VERBOSITY", None)
    hidden = {name for var in SECRET_VARIABLES for name in (var, var + "_FILE")}
    return {k: v for k, v in source.items() if k.upper() not in hidden}
