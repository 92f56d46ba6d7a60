"""The operator's commands around a change: ``--check`` before a swap, ``--on-change`` after it.

Both run as ``sh -c COMMAND`` with the child's environment (no etcd secrets) plus the path they are
about, for at most ``HOOK_TIMEOUT`` seconds. A failed check keeps the old files live; a failed
``--on-change`` is logged and counted, never fatal.
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

from .metrics import Metrics

HOOK_TIMEOUT = 60.0  # seconds a --check or --on-change command may take

log = logging.getLogger(__name__)


class Hooks:
    def __init__(
        self, check: str | None, on_change: str | None, environment: dict[str, str], metrics: Metrics
    ) -> None:
        self.check_command = check
        self.on_change_command = on_change
        self.environment = environment
        self.metrics = metrics

    def check(self, candidate: Path, revision: int) -> bool:
        """--check: whether the candidate generation may go live."""
        if self.check_command is None:
            return True
        env = {**self.environment, "DISPENSER_CANDIDATE": str(candidate)}
        outcome = run_hook(self.check_command, env, HOOK_TIMEOUT)
        if outcome == 0:
            return True
        self.metrics.errors.labels("check").inc()
        log.error(
            "revision %s: --check rejected the new files (%s); the old ones stay", revision, _said(outcome)
        )
        return False

    def on_change(self, generation: Path, revision: int) -> None:
        """--on-change: told after each swap (and the first projection)."""
        if not self.on_change_command:
            return
        env = {**self.environment, "DISPENSER_GENERATION": str(generation)}
        outcome = run_hook(self.on_change_command, env, HOOK_TIMEOUT)
        if outcome != 0:
            self.metrics.errors.labels("on_change").inc()
            log.warning("revision %s: --on-change failed (%s)", revision, _said(outcome))


def run_hook(command: str, env: dict[str, str], timeout: float) -> int | str:
    """Run ``sh -c command`` to its end: its exit status, or why it could not run.

    Our reaper (waitpid(-1), on SIGCHLD) must not run meanwhile, or subprocess's own wait would lose the
    status to it: the dispenser runs hooks and reaps under one lock.
    """
    try:
        return subprocess.run(["/bin/sh", "-c", command], env=env, timeout=timeout, check=False).returncode
    except subprocess.TimeoutExpired:
        return f"still running after {timeout:.0f} s; killed"
    except OSError as exc:
        return exc.strerror or str(exc)


def _said(outcome: int | str) -> str:
    return f"exit status {outcome}" if isinstance(outcome, int) else outcome
