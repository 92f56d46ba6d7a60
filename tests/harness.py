"""The real console script run as a process with a real child, and what tests need to watch it."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from etcd_server import Etcd

from projector.writer.layout import GENERATION_PATTERN

CHILD = Path(__file__).parent / "child_recorder.py"


def console_script() -> str:
    """The installed ``etcd-config-dispenser``, next to this interpreter."""
    found = shutil.which("etcd-config-dispenser", path=os.path.dirname(sys.executable))
    assert found, "the package is not installed in this environment (pip install -e '.[test]')"
    return found


def all_generations(target: Path) -> list[str]:
    """Every generation directory in a target, oldest first (names sort by time)."""
    return sorted(name for name in os.listdir(target) if GENERATION_PATTERN.fullmatch(name))


def generations(target: Path) -> list[str]:
    """The generation directories in a target, oldest first, up to the live one: those newer than it
    were made ahead for the next change (copies of the live one, never read) and are left out."""
    live = os.readlink(target / "..data")
    return [name for name in all_generations(target) if name <= live]


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def get(port: int, path: str) -> tuple[int, str]:
    """An HTTP GET on loopback: (status, body); (0, "") while nothing listens."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except urllib.error.URLError:
        return 0, ""  # not listening yet


def metric(port: int, name: str) -> float | None:
    """One sample of the dispenser's /metrics (``name`` with its labels, if any), or None."""
    _code, text = get(port, "/metrics")
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


class Run:
    """One dispenser process with the recording child; its stderr goes to a file."""

    def __init__(self, tmp_path: Path, etcd: Etcd) -> None:
        self.tmp_path = tmp_path
        self.etcd = etcd
        self.target = tmp_path / "box" / "target"  # box holds nothing else: escapes would show there
        self.records = tmp_path / "records.jsonl"
        self.stderr_path = tmp_path / f"dispenser-{time.monotonic_ns()}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.prefixes = ["--prefix=/cfg"]  # what it projects

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
        return {**env, "ETCD_ENDPOINTS": self.etcd.endpoints, **extra}

    def start(
        self,
        *flags: str,
        command: list[str] | None = None,
        env: dict[str, str] | None = None,
        wrapper: list[str] | None = None,
        program: str | None = None,
    ) -> None:
        """Run the dispenser (``program``, by default the console script; under ``wrapper``, e.g. setpriv)
        with ``command``, by default the recorder."""
        if command is None:
            command = [sys.executable, str(CHILD), str(self.target), str(self.records)]
        argv = [
            *(wrapper or []),
            program or console_script(),
            *self.prefixes,
            f"--target={self.target}",
            "--log-level=debug",
            *flags,
        ]
        if command:
            argv += ["--", *command]
        with open(self.stderr_path, "ab") as err:
            self.process = subprocess.Popen(argv, stderr=err, env=env or self.env())

    @property
    def log(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float = 10.0) -> None:
        wait_for(lambda: text in self.log, timeout, f"{text!r} in the log:\n{self.log}")

    def records_list(self) -> list[dict[str, Any]]:
        if not self.records.exists():
            return []
        # the child may be in the middle of writing a line: only whole lines count
        whole = self.records.read_text().split("\n")[:-1]
        return [json.loads(line) for line in whole if line.strip()]

    def signals(self, name: str = "SIGHUP") -> list[dict[str, Any]]:
        return [r for r in self.records_list() if r["event"] == name]

    def wait_signals(self, count: int, name: str = "SIGHUP", timeout: float = 10.0) -> list[dict[str, Any]]:
        return wait_for(
            lambda: len(self.signals(name)) >= count and self.signals(name),
            timeout,
            f"{count} x {name}; records: {self.records_list()}",
        )

    def wait_started(self, timeout: float = 15.0) -> dict[str, Any]:
        return wait_for(
            lambda: self.signals("start") and self.signals("start")[0],
            timeout,
            f"the child to start; log:\n{self.log if self.stderr_path.exists() else ''}",
        )

    def send(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def wait_exit(self, timeout: float = 15.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self) -> None:
        """End the dispenser (SIGTERM, forwarded to the child), then anything that is left."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.send_signal(signal.SIGKILL)
                self.process.wait()
        for pid in {record["pid"] for record in self.records_list()}:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def files(self) -> dict[str, bytes]:
        """The projection as a reader sees it through the top-level names."""
        found = {}
        for dirpath, dirs, names in os.walk(self.target, followlinks=True):
            rel = os.path.relpath(dirpath, self.target)
            if rel == ".":
                dirs[:] = [d for d in dirs if not d.startswith("..")]
                names = [n for n in names if not n.startswith("..")]
            for name in names:
                path = os.path.join(dirpath, name)
                found[os.path.normpath(os.path.relpath(path, self.target))] = Path(path).read_bytes()
        return found
