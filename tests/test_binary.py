"""The single-file executable (scripts/build-binary, PyInstaller) works end to end against etcd."""

from __future__ import annotations

import subprocess
from pathlib import Path

from harness import Run

ROOT = Path(__file__).resolve().parent.parent


def test_the_built_binary_projects_and_signals(run: Run) -> None:
    built = subprocess.run(
        [str(ROOT / "scripts" / "build-binary")], capture_output=True, text=True, timeout=600
    )
    assert built.returncode == 0, built.stderr[-2000:]
    binary = ROOT / "dist" / "etcd-config-dispenser"
    version = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("etcd-config-dispenser ")
    run.etcd.put(("/cfg/cert.pem", "C1"), ("/cfg/key.pem", "K1"))
    run.start("--signal=SIGHUP", program=str(binary))
    assert run.process is not None and Path(f"/proc/{run.process.pid}/exe").resolve() == binary
    assert run.wait_started(timeout=30)["files"] == {"cert.pem": "C1", "key.pem": "K1"}
    run.etcd.put(("/cfg/cert.pem", "C2"), ("/cfg/key.pem", "K2"))
    assert run.wait_signals(1)[-1]["files"] == {"cert.pem": "C2", "key.pem": "K2"}
