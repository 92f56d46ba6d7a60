"""User input as validated models: the command-line options and the ``ETCD_*`` environment.

Every rule about what a user may pass lives here: ``values`` (single values: modes, signals, ids,
durations, addresses), ``options`` (the command line), ``etcd`` (the ``ETCD_*`` environment). A rule
that fails raises :class:`UsageError` with one line that names the flag or variable; nothing else in
the program validates user input.
"""

from .etcd import SECRET_VARIABLES, Endpoint, EtcdConfig, Tls, child_environment, load_etcd_config
from .options import LOG_LEVELS, OneLineParser, Options, Ownership, load_options
from .values import (
    UsageError,
    directory_mode,
    normalize_prefix,
    parse_address,
    parse_duration,
    parse_mode,
    parse_signal,
)

__all__ = [
    "LOG_LEVELS",
    "SECRET_VARIABLES",
    "Endpoint",
    "EtcdConfig",
    "OneLineParser",
    "Options",
    "Ownership",
    "Tls",
    "UsageError",
    "child_environment",
    "directory_mode",
    "load_etcd_config",
    "load_options",
    "normalize_prefix",
    "parse_address",
    "parse_duration",
    "parse_mode",
    "parse_signal",
]
