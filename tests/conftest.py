"""Fixtures: a real etcd per test, and the dispenser runner. Helpers live in harness.py and
etcd_server.py, importable by every test module because this folder is put on sys.path."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from etcd_auth import enable_auth
from etcd_server import EtcdServer
from harness import Run


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    with EtcdServer(tmp_path / "etcd-data").running() as server:
        yield server


@pytest.fixture
def run(tmp_path: Path, etcd: EtcdServer) -> Iterator[Run]:
    runner = Run(tmp_path, etcd)
    yield runner
    runner.stop()


@pytest.fixture
def auth_etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    """etcd with /cfg/a put and authentication on: root, and alice who may read /cfg/ (etcd_auth.py)."""
    with EtcdServer(tmp_path / "etcd-data").running() as server:
        server.put(("/cfg/a", "1"))
        enable_auth(server)
        yield server
