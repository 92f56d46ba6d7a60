"""Running the dispenser as another user: its code bind-mounted where that user can read it (the
checkout or the virtual environment may be under /root), run by Debian's python3 (the test's own
interpreter may live where that user cannot go either)."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import projector


@contextmanager
def reachable_code() -> Iterator[list[str]]:
    """This package and its dependencies bind-mounted in a directory of /tmp; the mount points."""
    base = Path(tempfile.mkdtemp(prefix="dispenser-reachable-"))
    os.chmod(base, 0o755)
    sources = [Path(projector.__file__).parent.parent, *map(Path, site.getsitepackages())]
    mounted: list[Path] = []
    try:
        for n, source in enumerate(sources):
            point = base / str(n)
            point.mkdir()
            done = subprocess.run(
                ["mount", "--bind", str(source), str(point)], capture_output=True, text=True
            )
            if done.returncode != 0:
                pytest.skip(f"cannot bind-mount {source} for another user: {done.stderr.strip()}")
            mounted.append(point)
        yield [str(point) for point in mounted]
    finally:
        for point in mounted:
            subprocess.run(["umount", "-l", str(point)], check=False)
        shutil.rmtree(base, ignore_errors=True)


def setpriv(uid: int, gid: int) -> list[str]:
    """The command prefix that runs a program as ``uid``:``gid`` with no supplementary groups."""
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--"]


def as_user(uid: int, gid: int, paths: list[str], env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """The wrapper and environment that run ``python -m projector`` as ``uid``:``gid`` with ``paths``
    (``reachable_code``); skips, saying why, where that does not work."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to run the dispenser as another user")
    python = shutil.which("python3", path="/usr/bin:/bin")
    if python is None:
        pytest.skip("no /usr/bin/python3 for another user (Debian's python3)")
    wrapper = setpriv(uid, gid)
    env = {**env, "PYTHONPATH": ":".join(paths)}
    probe = subprocess.run(
        [*wrapper, python, "-m", "projector", "--version"], env=env, capture_output=True, text=True
    )
    if probe.returncode != 0:
        pytest.skip(f"the dispenser cannot run as uid {uid} here: {probe.stderr.strip()}")
    return [*wrapper, python, "-m"], env
