"""etcd-config-push: make etcd under a prefix equal to a local directory, in one transaction.

The other direction of the dispenser, for local development and for operators who keep configuration
in files: every file below ``--source`` becomes a key ``prefix/relative/path``. New and changed files
are put and keys whose file is gone are deleted, all in ONE transaction, so that a certificate and its
key change together and the dispenser signals once. With ``--watch`` (watchfiles) every settled change
of the directory becomes one more such transaction.

Hidden files and editor temporaries (``.*``, ``*~``, ``*.swp``) are skipped; symlinks are followed only
when they stay inside the source. A file whose key the dispenser would refuse is an error before
anything is sent, and so is a transaction larger than etcd's ``--max-txn-ops``. Values are never
printed: ``--dry-run`` shows names and sizes.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from .keys import RefusedKey, printable, relative_path
from .push_store import EtcdError, Store
from .settings import LOG_LEVELS, OneLineParser, UsageError, load_etcd_config, normalize_prefix

PROG = "etcd-config-push"
DEFAULT_MAX_TXN_OPS = 128  # etcd's own default for --max-txn-ops
DEBOUNCE_MS = 300
WAKE_MS = 1000  # how often the watcher wakes up when nothing changes

log = logging.getLogger("projector.push")


class PushError(Exception):
    """Nothing was sent; the message says why in one line."""


@dataclass
class Change:
    puts: dict[bytes, bytes] = field(default_factory=dict)
    deletes: list[bytes] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.puts or self.deletes)

    @property
    def operations(self) -> int:
        return len(self.puts) + len(self.deletes)


def skipped(name: str) -> bool:
    """Hidden files and editor temporaries are not configuration."""
    return name.startswith(".") or name.endswith("~") or name.endswith(".swp")


def read_source(source: Path, prefix: bytes) -> dict[bytes, bytes]:
    """Key -> content for every file below ``source``; refused keys are a :class:`PushError`."""
    root = source.resolve()
    files: dict[bytes, bytes] = {}
    for dirpath, dirs, names in os.walk(root, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not skipped(d) and _inside(root, Path(dirpath, d)))
        for name in sorted(names):
            path = Path(dirpath, name)
            if skipped(name) or not _inside(root, path) or not path.is_file():
                continue
            key = prefix + os.fsencode(path.relative_to(root))
            try:
                relative_path(key, prefix)
            except RefusedKey as refusal:
                raise PushError(f"{printable(key)} {refusal}; nothing was sent") from None
            files[key] = path.read_bytes()
    return files


def _inside(root: Path, path: Path) -> bool:
    """Whether a path (through any symlinks) stays inside the source."""
    resolved = path.resolve()
    return resolved == root or root in resolved.parents


def difference(files: dict[bytes, bytes], current: dict[bytes, bytes]) -> Change:
    """What makes etcd equal to the files: changed and new keys put, vanished keys deleted."""
    return Change(
        puts={key: value for key, value in files.items() if current.get(key) != value},
        deletes=sorted(current.keys() - files.keys()),
    )


class Pusher:
    def __init__(self, store: Store, prefix: bytes, source: Path, options: argparse.Namespace) -> None:
        self.store = store
        self.prefix = prefix
        self.source = source
        self.allow_empty: bool = options.allow_empty
        self.dry_run: bool = options.dry_run
        self.max_txn_ops: int = options.max_txn_ops

    def push(self) -> Change:
        """One transaction making etcd equal to the source (nothing, if they are equal already)."""
        if not self.source.is_dir():
            files: dict[bytes, bytes] = {}
            if not self.allow_empty:
                raise PushError(
                    f"--source {str(self.source)!r} is not a directory; --allow-empty empties the prefix"
                )
        else:
            files = read_source(self.source, self.prefix)
        if not files and not self.allow_empty:
            raise PushError(f"--source {str(self.source)!r} holds no files; --allow-empty empties the prefix")
        change = difference(files, self.store.read(self.prefix))
        if change.operations > self.max_txn_ops:
            raise PushError(
                f"{change.operations} changes do not fit one transaction: etcd allows {self.max_txn_ops} "
                "operations (--max-txn-ops); raise it on etcd and here, or push in steps"
            )
        if self.dry_run:
            for key, value in change.puts.items():
                print(f"put {printable(key)} ({len(value)} bytes)")
            for key in change.deletes:
                print(f"delete {printable(key)}")
        elif change:
            revision = self.store.commit(change.puts, change.deletes)
            log.info("revision %s: put %d, deleted %d", revision, len(change.puts), len(change.deletes))
        return change

    def watch(self) -> None:
        """Push after every settled change of the source until SIGINT or SIGTERM."""
        import watchfiles

        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda _signum, _frame: stop.set())
        log.info("watching %s", self.source)
        changes = watchfiles.watch(
            self.source,
            debounce=DEBOUNCE_MS,
            stop_event=stop,
            raise_interrupt=False,
            yield_on_timeout=True,
            rust_timeout=WAKE_MS,
        )
        armed = False
        for settled in changes:
            # The first (empty) wake-up comes once the watcher is armed: pushing then catches an edit
            # made between the first push and that moment. Later empty wake-ups are only timeouts.
            if settled or not armed:
                armed = True
                try:
                    self.push()
                except (PushError, EtcdError) as exc:
                    log.error("%s", exc)  # the next change of the directory is tried again


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG, description="Make etcd under a prefix equal to a directory, in one transaction."
    )
    add = parser.add_argument
    add("-p", "--prefix", required=True, help="etcd prefix (a directory: /certs is /certs/)")
    add("-s", "--source", required=True, type=Path, help="directory whose files become the keys")
    add("--watch", action="store_true", help="keep pushing every settled change (until SIGINT/SIGTERM)")
    add("--dry-run", action="store_true", help="print what would be put and deleted (names and sizes)")
    add("--allow-empty", action="store_true", help="let a missing or empty source delete every key")
    add("--max-txn-ops", type=int, default=DEFAULT_MAX_TXN_OPS, help="etcd's --max-txn-ops (default 128)")
    add("--log-level", choices=LOG_LEVELS, default="info")
    return parser


def main(argv: list[str] | None = None) -> NoReturn:
    try:
        options = _parser().parse_args(sys.argv[1:] if argv is None else argv)
        prefix = normalize_prefix(options.prefix)
        store = Store(load_etcd_config())
    except (UsageError, ValueError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        sys.exit(2)
    logging.basicConfig(
        level=options.log_level.upper(), format="%(levelname)s %(message)s", stream=sys.stderr
    )
    pusher = Pusher(store, prefix, options.source, options)
    try:
        pusher.push()
    except PushError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except EtcdError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        sys.exit(1)
    if options.watch and not options.dry_run:
        pusher.watch()
    sys.exit(0)
