"""Scenario 7: etcd with authentication (a role limited to the prefix), TLS and mutual TLS."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from etcd_auth import ALICE_PASSWORD, enable_auth
from etcd_server import EtcdServer
from harness import Run
from pki import Pki, make_pki

SECRET_NAMES = {
    "ETCD_PASSWORD",
    "ETCD_PASSWORD_FILE",
    "ETCD_USERNAME_AND_PASSWORD",
    "ETCD_USERNAME_AND_PASSWORD_FILE",
    "ETCD_CLIENT_KEY",
    "ETCD_CLIENT_KEY_FILE",
}


@pytest.fixture
def auth_etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    with EtcdServer(tmp_path / "etcd-data", ["--auth-token-ttl=2"]).running() as server:
        server.put(("/cfg/a", "1"), ("/secret/other", "not for alice"))
        enable_auth(server)
        yield server


def assert_served(run: Run, *secrets: str) -> None:
    """The child starts with the prefix (and nothing else), gets an update, and sees no etcd secret."""
    start = run.wait_started(timeout=20)
    assert start["files"] == {"a": "1"}
    assert not SECRET_NAMES & set(start["env"])
    run.etcd.put(("/cfg/a", "2"))
    assert run.wait_signals(1, timeout=20)[-1]["files"] == {"a": "2"}
    for secret in secrets:
        assert secret not in run.log


@pytest.mark.parametrize("form", ["pair", "combined", "pair-files", "combined-file"])
def test_password_forms(tmp_path: Path, auth_etcd: EtcdServer, form: str) -> None:
    (tmp_path / "user").write_text("alice\n")
    (tmp_path / "password").write_text(ALICE_PASSWORD + "\n")
    (tmp_path / "both").write_text(f"alice:{ALICE_PASSWORD}\n")
    env = {
        "pair": {"ETCD_USERNAME": "alice", "ETCD_PASSWORD": ALICE_PASSWORD},
        "combined": {"ETCD_USERNAME_AND_PASSWORD": f"alice:{ALICE_PASSWORD}"},
        "pair-files": {
            "ETCD_USERNAME_FILE": str(tmp_path / "user"),
            "ETCD_PASSWORD_FILE": str(tmp_path / "password"),
        },
        "combined-file": {"ETCD_USERNAME_AND_PASSWORD_FILE": str(tmp_path / "both")},
    }[form]
    run = Run(tmp_path, auth_etcd)
    try:
        run.start("--signal=SIGHUP", env=run.env(**env))
        assert_served(run, ALICE_PASSWORD)
    finally:
        run.stop()


def test_token_expiry_and_restart_under_a_running_watch(tmp_path: Path, auth_etcd: EtcdServer) -> None:
    run = Run(tmp_path, auth_etcd)
    try:
        run.start("--signal=SIGHUP", env=run.env(ETCD_USERNAME="alice", ETCD_PASSWORD=ALICE_PASSWORD))
        assert_served(run, ALICE_PASSWORD)
        time.sleep(4)  # the token (TTL 2 s) has expired
        auth_etcd.put(("/cfg/a", "3"))
        assert run.wait_signals(2, timeout=20)[-1]["files"] == {"a": "3"}
        auth_etcd.restart()  # every token is gone; the dispenser must authenticate again
        auth_etcd.put(("/cfg/a", "4"))
        assert run.wait_signals(3, timeout=30)[-1]["files"] == {"a": "4"}
        assert ALICE_PASSWORD not in run.log
    finally:
        run.stop()


def test_a_wrong_password_is_a_clear_retried_error_never_printed(
    tmp_path: Path, auth_etcd: EtcdServer
) -> None:
    run = Run(tmp_path, auth_etcd)
    try:
        run.start("--signal=SIGHUP", env=run.env(ETCD_USERNAME="alice", ETCD_PASSWORD="wrong-pw-Vb3"))
        run.wait_log("authentication failed")
        time.sleep(1.5)
        assert run.log.count("still failing") >= 2
        assert run.log.count("authentication failed, invalid user ID or password; keeping") == 1
        assert "wrong-pw-Vb3" not in run.log
        assert run.signals("start") == []
    finally:
        run.stop()


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


def tls_etcd(tmp_path: Path, pki: Pki, mutual: bool) -> EtcdServer:
    args = [f"--cert-file={pki.server_cert}", f"--key-file={pki.server_key}"]
    if mutual:
        args += ["--client-cert-auth", f"--trusted-ca-file={pki.ca}"]
    server = EtcdServer(tmp_path / "etcd-data", args, scheme="https")
    server.credentials = grpc.ssl_channel_credentials(
        pki.ca.read_bytes(), pki.client_key.read_bytes(), pki.client_cert.read_bytes()
    )
    server.start()
    server.put(("/cfg/a", "1"))
    return server


def test_tls_with_a_server_ca(tmp_path: Path, pki: Pki) -> None:
    server = tls_etcd(tmp_path, pki, mutual=False)
    run = Run(tmp_path, server)
    try:
        run.start("--signal=SIGHUP", env=run.env(ETCD_SERVER_CA=pki.ca.read_text()))
        assert_served(run)
    finally:
        run.stop()
        server.kill()


def test_tls_without_the_ca_is_refused_and_retried(tmp_path: Path, pki: Pki) -> None:
    server = tls_etcd(tmp_path, pki, mutual=False)
    run = Run(tmp_path, server)
    try:
        run.start("--signal=SIGHUP")
        run.wait_log("CERTIFICATE_VERIFY_FAILED")
        time.sleep(1)
        assert run.signals("start") == []
    finally:
        run.stop()
        server.kill()


@pytest.mark.parametrize("form", ["text", "files", "insecure"])
def test_mutual_tls(tmp_path: Path, pki: Pki, form: str) -> None:
    server = tls_etcd(tmp_path, pki, mutual=True)
    env = {
        "text": {
            "ETCD_SERVER_CA": pki.ca.read_text(),
            "ETCD_CLIENT_CERT": pki.client_cert.read_text(),
            "ETCD_CLIENT_KEY": pki.client_key.read_text(),
        },
        "files": {
            "ETCD_SERVER_CA_FILE": str(pki.ca),
            "ETCD_CLIENT_CERT_FILE": str(pki.client_cert),
            "ETCD_CLIENT_KEY_FILE": str(pki.client_key),
        },
        "insecure": {
            "ETCD_INSECURE_SKIP_VERIFY": "true",
            "ETCD_CLIENT_CERT_FILE": str(pki.client_cert),
            "ETCD_CLIENT_KEY_FILE": str(pki.client_key),
        },
    }[form]
    run = Run(tmp_path, server)
    try:
        run.start("--signal=SIGHUP", env=run.env(**env))
        assert_served(run, "PRIVATE KEY")
    finally:
        run.stop()
        server.kill()
