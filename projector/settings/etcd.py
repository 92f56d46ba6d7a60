"""The ``ETCD_*`` environment, validated: how to reach etcd, and what the child must not inherit.

Each variable may instead be given as ``NAME_FILE``, a path to read it from; both set is an error. The
secrets (the password, the client key, in either form) never reach the child's environment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .. import INHERITED_GRPC_VERBOSITY
from .values import UsageError, first_error

DEFAULT_ENDPOINT = "127.0.0.1:2379"  # the scheme follows the TLS settings
DEFAULT_PORT = 2379

# Environment variables that hold secrets, in both forms: the child never inherits them, and once read
# they are gone from our own environment too (privacy.py).
SECRET_VARIABLES = tuple(
    name
    for variable in ("ETCD_PASSWORD", "ETCD_USERNAME_AND_PASSWORD", "ETCD_CLIENT_KEY")
    for name in (variable, variable + "_FILE")
)


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
        raise UsageError(first_error(exc, _var)) from None
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


def child_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Our environment as we were given it, without the etcd secrets, for the child."""
    source = dict(os.environ if environ is None else environ)
    if INHERITED_GRPC_VERBOSITY is None:
        source.pop("GRPC_VERBOSITY", None)
    hidden = set(SECRET_VARIABLES)
    hidden.add("NOTIFY_SOCKET")  # systemd's socket is ours: the command is not the service's main process
    return {k: v for k, v in source.items() if k.upper() not in hidden}
