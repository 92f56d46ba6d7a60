"""The one-directory binary (scripts/build-binary, PyInstaller) works end to end against etcd, unpacks
nothing at start and so leaves nothing behind when killed. (Its run on a read-only root is in
test_containers.py, inside the image that carries it.)"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from harness import Run

ROOT = Path(__file__).resolve().parent.parent
BINARY = ROOT / "dist" / "etcd-config-dispenser" / "etcd-config-dispenser"


def test_the_built_binary_projects_signals_and_leaves_nothing_when_killed(run: Run) -> None:
    built = subprocess.run(
        [str(ROOT / "scripts" / "build-binary")], capture_output=True, text=True, timeout=600
    )
    assert built.returncode == 0, built.stderr[-2000:]
    version = subprocess.run([str(BINARY), "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("etcd-config-dispenser ")
    run.etcd.put(("/cfg/cert.pem", "C1"), ("/cfg/key.pem", "K1"))
    tmp = run.tmp_path / "tmp"  # where a one-file executable would unpack itself
    tmp.mkdir()
    run.start("--signal=SIGHUP", program=str(BINARY), env=run.env(TMPDIR=str(tmp)))
    assert run.process is not None and Path(f"/proc/{run.process.pid}/exe").resolve() == BINARY
    assert run.wait_started(timeout=30)["files"] == {"cert.pem": "C1", "key.pem": "K1"}
    run.etcd.put(("/cfg/cert.pem", "C2"), ("/cfg/key.pem", "K2"))
    assert run.wait_signals(1)[-1]["files"] == {"cert.pem": "C2", "key.pem": "K2"}
    run.send(signal.SIGKILL)
    assert run.wait_exit() == -signal.SIGKILL
    assert list(tmp.iterdir()) == []
