"""The package as users install it: an sdist and a wheel built with ``python -m build`` that pass
``twine check``, the wheel installed with pipx into an environment of its own, run from there."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from etcd_server import EtcdServer

ROOT = Path(__file__).parent.parent


def run(*argv: str | Path, env: dict[str, str] | None = None, timeout: float = 600) -> str:
    done = subprocess.run([str(a) for a in argv], capture_output=True, text=True, env=env, timeout=timeout)
    assert done.returncode == 0, f"{argv}: {done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def test_the_wheel_installs_with_pipx_and_projects(tmp_path: Path, etcd: EtcdServer) -> None:
    for module in ("build", "twine", "pipx"):
        if subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True).returncode:
            pytest.skip(f"needs {module} (the test extra: pip install -e '.[test]')")
    dist = tmp_path / "dist"
    run(sys.executable, "-m", "build", "--outdir", dist, ROOT)
    [wheel] = dist.glob("etcd_config_dispenser-*-py3-none-any.whl")
    [sdist] = dist.glob("etcd_config_dispenser-*.tar.gz")
    assert "PASSED" in run(sys.executable, "-m", "twine", "check", "--strict", wheel, sdist)

    home, bin_dir = tmp_path / "pipx", tmp_path / "bin"
    env = {
        **os.environ,
        "PIPX_HOME": str(home),
        "PIPX_BIN_DIR": str(bin_dir),
        "PIPX_MAN_DIR": str(tmp_path / "man"),
    }
    run(sys.executable, "-m", "pipx", "install", wheel, env=env)
    dispenser = bin_dir / "etcd-config-dispenser"
    assert dispenser.exists() and (bin_dir / "etcd-config-push").exists()
    assert str(home) in str(dispenser.resolve())  # pipx's own environment, not this checkout's
    assert version("etcd-config-dispenser") in run(dispenser, "--version")

    etcd.put(("/cfg/cert.pem", "CERT"))
    target = tmp_path / "target"
    clean = {"PATH": "/usr/bin:/bin", "ETCD_ENDPOINTS": etcd.endpoints}
    run(dispenser, "--prefix=/cfg", f"--target={target}", "--once", env=clean, timeout=60)
    assert (target / "cert.pem").read_text() == "CERT"
