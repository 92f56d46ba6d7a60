"""The command line: parse flags, check the environment, run (assembly.py wires the parts), and choose
the exit status.

Exit statuses: the child's own (128+N if a signal N killed it); 0 after ``--once`` or when a sidecar
is stopped; 2 for a usage error (one line on stderr naming the flag or variable, before anything is
written); 1 when the target cannot be prepared; 126/127 when the command cannot be started.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from importlib.metadata import version
from typing import NoReturn

from . import notify
from .assembly import assemble
from .child import StartError
from .metrics import Metrics
from .privacy import hide_credentials
from .settings import LOG_LEVELS, SECRET_VARIABLES, OneLineParser, UsageError, load_etcd_config, load_options
from .writer import WriteError

PROG = "etcd-config-dispenser"
USAGE = f"{PROG} --prefix=PREFIX --target=DIR [options] [-- command [args...]]"

log = logging.getLogger("projector")


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        usage=USAGE,
        description="Project every key under an etcd prefix into a directory, atomically, start the "
        "command, and signal it whenever the files change. etcd is configured by ETCD_* variables.",
    )
    add = parser.add_argument

    def in_order(*flags: str, kind: str, metavar: str, help: str) -> None:
        """--prefix and --item share one list, in the order given: an item belongs to the prefix before it."""
        add(*flags, dest="sources", action="append", type=lambda t: (kind, t), metavar=metavar, help=help)

    in_order(
        "-p",
        "--prefix",
        kind="prefix",
        metavar="PREFIX[=DIR]",
        help="etcd prefix to project (repeatable), its keys under DIR if given; /certs is /certs/",
    )
    add("-t", "--target", help="directory to project into (created if missing)")
    add("-s", "--signal", help="signal for the command after each change (name or number); none if unset")
    add("-m", "--mode", default="600", help="octal mode of the files (default 600)")
    add("-o", "--owner", help="owner of the files: user name or uid (root only, unless it is you)")
    add("-g", "--group", help="group of the files: group name or gid")
    add("--once", action="store_true", help="project once and exit (for init containers)")
    add("--fsync", action="store_true", help="flush files and directories to disk around each swap")
    add("--log-level", choices=LOG_LEVELS, default="info", help="default info")
    add(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="text (default) or one JSON object a line",
    )
    add(
        "--check", metavar="CMD", help="shell command that must succeed on $DISPENSER_CANDIDATE before a swap"
    )
    add("--on-change", metavar="CMD", help="shell command run after each swap, with $DISPENSER_GENERATION")
    add("--metrics-address", help="serve /metrics, /healthz and /readyz on HOST:PORT (off by default)")
    add(
        "--confirm-interval",
        metavar="DURATION",
        default="10s",
        help="how often to confirm with etcd that the files are current (default 10s)",
    )
    in_order(
        "--item",
        kind="item",
        metavar="KEY=PATH",
        help="project only KEY (of the --prefix before it), at PATH",
    )
    repeatable = [
        ("--include", "GLOB", "project only keys matching"),
        ("--exclude", "GLOB", "never project keys matching"),
        ("--file-mode", "GLOB=MODE", "mode for matching files"),
        (
            "--file-owner",
            "GLOB=USER[:GROUP]",
            "owner and group of matching files (root only, unless it is you)",
        ),
        ("--decode", "GLOB=base64", "decode matching values"),
        ("--require", "PATH", "start the command once PATH exists"),
        ("--template", "SRC=DEST", "render the template SRC into DEST, with the keys' values"),
    ]
    for flag, metavar, text in repeatable:
        add(flag, metavar=metavar, action="append", default=[], help=f"{text} (repeatable)")
    add("--template-only", action="store_true", help="project only the rendered templates, not the keys")
    add("--wait", metavar="MIN[:MAX]", help="write changes once etcd was quiet for MIN (at most MAX)")
    add("--allow-empty", action="store_true", help="let a change through that would leave the target empty")
    add("--max-removed", metavar="N|P%", help="hold back a change that removes more files than this")
    add("--restart", action="store_true", help="restart the command after each change instead of a signal")
    add(
        "--stop-timeout", metavar="DURATION", default="10s", help="SIGKILL the command this long after a stop"
    )
    add(
        "--start-grace",
        metavar="DURATION",
        default="10s",
        help="hold --signal until the command handles it, at most this long after it starts",
    )
    add("--version", action="version", version=f"{PROG} {version('etcd-config-dispenser')}")
    return parser


def parse(argv: list[str]) -> dict[str, object]:
    """Flags before ``--``, the command after it."""
    flags, command = argv, []
    if "--" in argv:
        split = argv.index("--")
        flags, command = argv[:split], argv[split + 1 :]
    parsed = vars(_parser().parse_args(flags))
    sources = parsed.pop("sources") or []
    missing = [
        name for name, given in (("-p/--prefix", sources), ("-t/--target", parsed["target"])) if not given
    ]
    if missing:
        raise UsageError(f"the following arguments are required: {', '.join(missing)}")
    parsed["prefix"] = _mounts(sources)
    if parsed["once"] and command:
        raise UsageError("--once projects and exits; it takes no command after --")
    return {**parsed, "command": command}


def _mounts(sources: list[tuple[str, str]]) -> list[tuple[str, list[str]]]:
    """Each ``--prefix`` with the ``--item`` flags after it (with one prefix, items may come first)."""
    mounts: list[tuple[str, list[str]]] = []
    loose: list[str] = []
    for kind, text in sources:
        if kind == "prefix":
            mounts.append((text, []))
        else:
            (mounts[-1][1] if mounts else loose).append(text)
    if not mounts:
        raise UsageError("--item: give it after the --prefix it chooses from")
    if loose and len(mounts) > 1:
        raise UsageError("--item: give it after the --prefix it chooses from")
    mounts[0][1][:0] = loose
    return mounts


def main(argv: list[str] | None = None) -> NoReturn:
    try:
        options = load_options(**parse(sys.argv[1:] if argv is None else argv))
        etcd = load_etcd_config()
        hide_credentials(SECRET_VARIABLES)  # read: from now on only our own memory holds them
        if options.target.exists() and not options.target.is_dir():
            raise UsageError(f"--target: {str(options.target)!r} exists and is not a directory")
        metrics = Metrics()
        if options.metrics_address:
            _serve(metrics, *options.metrics_address)
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        sys.exit(2)
    _configure_logging(options.log_level, options.log_format)
    prefixes = ", ".join(
        mount.prefix.decode() + (f" (into {mount.directory}/)" if mount.directory else "")
        for mount in options.prefix
    )
    log.info("projecting %s from %s into %s", prefixes, etcd.describe(), options.target)
    try:
        sys.exit(assemble(options, etcd, metrics, notify.from_environment()).run())
    except WriteError as exc:
        log.error("cannot prepare the target: %s", exc)
        sys.exit(1)
    except StartError as exc:
        log.error("%s", exc)
        sys.exit(exc.status)


def _serve(metrics: Metrics, host: str, port: int) -> None:
    from .exposition import serve  # the Prometheus client library, only when metrics are served

    try:
        serve(metrics, host, port)
    except OSError as exc:
        raise UsageError(f"--metrics-address: cannot listen on {host}:{port}: {exc.strerror}") from None


class _JsonFormatter(logging.Formatter):
    """One JSON object a line, for log collectors."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            {
                "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
                "level": record.levelname.lower(),
                "message": record.getMessage(),
            }
        )


def _configure_logging(level: str, form: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    formatter: logging.Formatter
    if form == "json":
        formatter = _JsonFormatter()
    else:
        formatter = logging.Formatter(
            "%(asctime)s.%(msecs)03dZ %(levelname)s %(message)s", datefmt="%Y-%m-%dT%H:%M:%S"
        )
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
