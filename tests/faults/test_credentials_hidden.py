"""The command cannot read the etcd credentials out of the dispenser: a real command reads
``/proc/$PPID/environ`` (the dispenser's initial environment) and reports what it found, as root
without CAP_SYS_PTRACE, and as the same unprivileged user as the dispenser; the same for --check and
--on-change commands; and a client key given as PEM text."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from etcd_auth import ALICE_PASSWORD
from etcd_server import EtcdServer
from harness import Run, wait_for
from pki import make_pki
from unprivileged import as_user, reachable_code

UNPRIVILEGED = 65534  # nobody
# What a reader of the dispenser's initial environment finds, one variable a line; or why not.
READER = 'tr "\\0" "\\n" < /proc/$PPID/environ > "$1" 2>/dev/null || echo "unreadable" > "$1"'


def needs(*tools: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: to drop capabilities and to run as another user")
    for tool in tools:
        if not shutil.which(tool):
            pytest.skip(f"needs {tool}")


def reader(out: Path, *prefix: str) -> list[str]:
    """A command that writes what it read of its parent's environment to ``out``, then stays up."""
    return [*prefix, "sh", "-c", f"{READER}; exec sleep 60", "reader", str(out)]


def found(out: Path) -> str:
    return wait_for(lambda: out.exists() and out.read_text(), 15, f"the reader's report in {out}")


def alice(run: Run, **extra: str) -> dict[str, str]:
    return run.env(ETCD_USERNAME="alice", ETCD_PASSWORD=ALICE_PASSWORD, **extra)


def test_a_root_command_without_cap_sys_ptrace_finds_no_password(
    tmp_path: Path, auth_etcd: EtcdServer
) -> None:
    needs("setpriv")
    out = tmp_path / "environ.txt"
    run = Run(tmp_path, auth_etcd)
    try:
        command = reader(out, "setpriv", "--bounding-set=-sys_ptrace", "--")
        run.start(command=command, env=alice(run))
        report = found(out)
        assert ALICE_PASSWORD not in report
        if report != "unreadable\n":  # readable here: non-dumpable alone does not stop root
            assert "ETCD_ENDPOINTS=" in report and "ETCD_USERNAME=alice" in report
        auth_etcd.put(("/cfg/a", "2"))  # the dispenser still has what it needs
        wait_for(lambda: run.files() == {"a": b"2"}, what="the change")
    finally:
        run.stop()
    print(f"FIGURE root without CAP_SYS_PTRACE: {'could not read' if report == 'unreadable' else 'read'} it")


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A directory the unprivileged user can work in (tmp_path is root's alone)."""
    base = Path(tempfile.mkdtemp(prefix="dispenser-unprivileged-"))
    os.chmod(base, 0o755)
    os.chown(base, UNPRIVILEGED, UNPRIVILEGED)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def reachable() -> Iterator[list[str]]:
    with reachable_code() as paths:
        yield paths


def as_unprivileged(run: Run, paths: list[str]) -> tuple[list[str], dict[str, str]]:
    return as_user(UNPRIVILEGED, UNPRIVILEGED, paths, alice(run))


def test_commands_of_the_same_user_find_no_password(
    open_tmp: Path, reachable: list[str], auth_etcd: EtcdServer
) -> None:
    """The dispenser and its command, --check and --on-change all run as one unprivileged user."""
    needs("setpriv")
    outs = [open_tmp / name for name in ("command.txt", "check.txt", "on-change.txt")]
    run = Run(open_tmp, auth_etcd)
    wrapper, env = as_unprivileged(run, reachable)
    try:
        check, on_change = (READER.replace('"$1"', str(out)) for out in outs[1:])
        hooks = (f"--check={check}", f"--on-change={on_change}")
        run.start(*hooks, command=reader(outs[0]), env=env, wrapper=wrapper, program="projector")
        reports = [found(out) for out in outs]
        assert all(ALICE_PASSWORD not in report for report in reports), reports
        assert run.process is not None and run.process.poll() is None
        # non-dumpable: the kernel gives its /proc files to root, out of its own user's reach
        assert os.stat(f"/proc/{run.process.pid}/environ").st_uid == 0
        auth_etcd.put(("/cfg/a", "2"))
        wait_for(lambda: run.files() == {"a": b"2"}, what="the change")
    finally:
        run.stop()


def test_check_and_on_change_commands_find_no_password(tmp_path: Path, auth_etcd: EtcdServer) -> None:
    needs("setpriv")
    check_out, change_out = tmp_path / "check.txt", tmp_path / "on-change.txt"
    drop = "exec setpriv --bounding-set=-sys_ptrace -- sh -c"  # exec: $PPID is the dispenser
    run = Run(tmp_path, auth_etcd)
    try:
        check = f"--check={drop} '{READER}' check {check_out}"
        on_change = f"--on-change={drop} '{READER}' on-change {change_out}"
        run.start("--signal=SIGHUP", check, on_change, env=alice(run))
        run.wait_started()
        auth_etcd.put(("/cfg/a", "2"))  # a change: --check, then --on-change
        for out in (check_out, change_out):
            assert ALICE_PASSWORD not in found(out)
        assert run.wait_signals(1)[-1]["files"] == {"a": "2"}
    finally:
        run.stop()


def test_a_client_key_given_as_pem_text_is_not_found_either(tmp_path: Path) -> None:
    needs("setpriv")
    pki = make_pki(tmp_path / "pki")
    key = pki.client_key.read_text()
    args = [f"--cert-file={pki.server_cert}", f"--key-file={pki.server_key}"]
    args += ["--client-cert-auth", f"--trusted-ca-file={pki.ca}"]
    server = EtcdServer(tmp_path / "etcd-data", args, scheme="https")
    server.credentials = grpc.ssl_channel_credentials(
        pki.ca.read_bytes(), pki.client_key.read_bytes(), pki.client_cert.read_bytes()
    )
    with server.running():
        server.put(("/cfg/a", "1"))
        out = tmp_path / "environ.txt"
        run = Run(tmp_path, server)
        try:
            env = run.env(
                ETCD_SERVER_CA=pki.ca.read_text(),
                ETCD_CLIENT_CERT=pki.client_cert.read_text(),
                ETCD_CLIENT_KEY=key,
            )
            run.start(command=reader(out, "setpriv", "--bounding-set=-sys_ptrace", "--"), env=env)
            report = found(out)
            body = key.split("\n")[1]  # a line of the key itself
            assert body not in report and "PRIVATE KEY" not in report
            server.put(("/cfg/a", "2"))
            wait_for(lambda: run.files() == {"a": b"2"}, what="the change over mutual TLS")
        finally:
            run.stop()
