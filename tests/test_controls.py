"""What operators choose and how programs are told: --include/--exclude, --file-mode, --require,
--wait, --restart, --stop-timeout, no orphaned command, and systemd's notifications. End to end: the
real command, a real etcd, real child processes."""

from __future__ import annotations

import os
import re
import signal
import socket
import stat
import sys
import time
from pathlib import Path

from etcd_server import free_port
from harness import Run, get, metric, wait_for

HELD = Path(__file__).parent / "held_values.py"


def held(run: Run, *values: bytes) -> list[bool]:
    """Which of ``values`` the dispenser (run under held_values.py) holds now."""
    report = run.tmp_path / "held"
    report.unlink(missing_ok=True)
    (run.tmp_path / "held.ask").write_text("\n".join(v.hex() for v in values))
    wait_for(report.exists, 20, "the dispenser's answer")
    return [line == "held" for line in report.read_text().splitlines()]


def test_an_excluded_key_never_reaches_disk_or_memory(run: Run) -> None:
    account, held_aside = os.urandom(32), os.urandom(32)  # held_aside: refused, but valid, so kept
    run.etcd.put(("/cfg/cert.pem", "C1"), ("/cfg/key.pem", "K1"), ("/cfg/acme-account", account))
    run.etcd.put(("/cfg/d", "file"), ("/cfg/d/below", held_aside))
    port = free_port()
    in_process = [sys.executable, str(HELD), str(run.tmp_path / "held")]  # then "--" and the flags
    flags = ("--signal=SIGHUP", "--exclude=*-account", f"--metrics-address=127.0.0.1:{port}")
    run.start(*flags, wrapper=in_process, program="--")
    assert run.wait_started()["files"] == {"cert.pem": "C1", "key.pem": "K1", "d": "file"}
    run.etcd.put(("/cfg/acme-account", account[::-1]))  # through the watch too
    run.etcd.put(("/cfg/cert.pem", "C2"), ("/cfg/key.pem", "K2"))
    assert run.wait_signals(1)[-1]["files"] == {"cert.pem": "C2", "key.pem": "K2", "d": "file"}
    assert "acme-account" not in run.log  # not refused: no warning
    assert metric(port, "dispenser_rejected_keys") == 1.0  # d/below alone
    assert held(run, held_aside, account, account[::-1]) == [True, False, False]
    on_disk = b"".join(path.read_bytes() for path in run.target.rglob("*") if path.is_file())
    assert account not in on_disk and account[::-1] not in on_disk


def test_include_picks_keys_and_conflicts_are_decided_among_them(run: Run) -> None:
    run.etcd.put(("/cfg/a/cert.pem", "C"), ("/cfg/b.pem", "B"), ("/cfg/x", "X"), ("/cfg/x/y.pem", "Y"))
    run.start("--once", "--include=**/*.pem", command=[])
    assert run.wait_exit() == 0
    # x is not projected, so it does not shadow x/y.pem
    assert run.files() == {"a/cert.pem": b"C", "b.pem": b"B", "x/y.pem": b"Y"}
    assert "refusing" not in run.log


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_file_modes_by_glob_and_directories_that_let_readers_reach_them(run: Run) -> None:
    run.etcd.put(("/cfg/tls/site.crt", "C"), ("/cfg/tls/site.key", "K"), ("/cfg/private/x.key", "P"))
    run.start("--signal=SIGHUP", "--mode=0600", "--file-mode=*.crt=0640", "--file-mode=**/*.crt=0644")
    run.wait_started()
    live = run.target / os.readlink(run.target / "..data")
    assert mode(live / "tls" / "site.crt") == 0o644  # the first match wins: **/*.crt (*.crt is top-level)
    assert mode(live / "tls" / "site.key") == 0o600
    assert (mode(live / "tls"), mode(live / "private"), mode(live)) == (0o755, 0o700, 0o755)
    run.etcd.delete("/cfg/tls/site.crt")  # nothing readable by others is left below tls/
    run.wait_signals(1)
    live = run.target / os.readlink(run.target / "..data")
    assert (mode(live / "tls"), mode(live / "private"), mode(live)) == (0o700, 0o700, 0o700)
    run.etcd.put(("/cfg/top.crt", "T"))
    run.wait_signals(2)
    live = run.target / os.readlink(run.target / "..data")
    assert mode(live / "top.crt") == 0o640 and mode(live) == 0o750


def test_the_command_starts_once_required_files_are_there(run: Run) -> None:
    run.etcd.put(("/cfg/cert.pem", "C1"))
    port = free_port()
    flags = (
        "--signal=SIGHUP",
        "--require=cert.pem",
        "--require=keys/",
        f"--metrics-address=127.0.0.1:{port}",
    )
    run.start(*flags)
    run.wait_log("waiting for keys before going on")
    time.sleep(0.5)
    assert run.signals("start") == [] and get(port, "/readyz")[0] == 503
    assert run.files() == {"cert.pem": b"C1"}  # what exists is projected meanwhile
    run.etcd.put(("/cfg/cert.pem", "C2"))
    wait_for(lambda: run.files() == {"cert.pem": b"C2"}, what="the file kept up to date")
    run.etcd.put(("/cfg/keys/key.pem", "K2"))
    assert run.wait_started()["files"] == {"cert.pem": "C2", "keys/key.pem": "K2"}
    assert get(port, "/readyz")[0] == 200
    assert run.log.count("waiting for") == 1 and "every required file is there" in run.log


def test_once_waits_for_required_files_too(run: Run) -> None:
    run.start("--once", "--require=ready", command=[])
    run.wait_log("waiting for ready")
    assert run.process is not None and run.process.poll() is None
    run.etcd.put(("/cfg/ready", "yes"))
    assert run.wait_exit() == 0 and run.files() == {"ready": b"yes"}


def test_wait_turns_a_burst_into_a_few_signals_with_the_final_files(run: Run) -> None:
    run.etcd.put(("/cfg/a", "-1"), ("/cfg/b", "-1"))
    run.start("--signal=SIGHUP", "--wait=300ms:2s")
    run.wait_started()
    with run.etcd.client() as client:
        for n in range(50):
            client.transaction(
                compare=[],
                success=[
                    client.transactions.put("/cfg/a", str(n)),
                    client.transactions.put("/cfg/b", str(n)),
                ],
                failure=[],
            )
    final = {"a": "49", "b": "49"}
    wait_for(lambda: run.signals() and run.signals()[-1]["files"] == final, 10, "the burst written")
    time.sleep(1)
    signals = run.signals()
    assert 1 <= len(signals) <= 5, len(signals)
    assert all(r["files"]["a"] == r["files"]["b"] for r in signals)  # no transaction split
    assert run.files() == {"a": b"49", "b": b"49"}


def test_restart_gives_a_new_command_per_change(run: Run) -> None:
    run.etcd.put(("/cfg/a", "0"))
    run.start("--restart", "--stop-timeout=5s")
    first = run.wait_started()
    for n in range(1, 4):
        run.etcd.put(("/cfg/a", str(n)))
        wait_for(lambda n=n: len(run.signals("start")) == n + 1, 15, f"restart {n}")  # type: ignore[misc]
    starts = run.signals("start")
    assert [r["files"] for r in starts] == [{"a": str(n)} for n in range(4)]
    assert len({r["pid"] for r in starts}) == 4 and first["pid"] == starts[0]["pid"]
    assert [r["pid"] for r in run.signals("SIGTERM")] == [r["pid"] for r in starts[:-1]]
    assert run.signals("SIGHUP") == []


def test_restart_ends_with_the_commands_own_status(run: Run) -> None:
    run.etcd.put(("/cfg/a", "0"))
    run.start("--restart", command=["sh", "-c", "sleep 0.5; exit 7"])
    assert run.wait_exit() == 7


def test_a_command_that_ignores_sigterm_is_killed_after_the_stop_timeout(run: Run) -> None:
    run.etcd.put(("/cfg/a", "0"))
    ready = run.tmp_path / "ready"
    stubborn = f"trap '' TERM; touch {ready}; while :; do sleep 0.1; done"
    run.start("--stop-timeout=1s", command=["sh", "-c", stubborn])
    wait_for(ready.exists, 15, "the command")
    began = time.monotonic()
    run.send(signal.SIGTERM)
    assert run.wait_exit(15) == 128 + signal.SIGKILL
    assert time.monotonic() - began >= 1.0
    assert "did not exit 1 s after it was asked to; killing it" in run.log


def test_a_killed_dispenser_leaves_no_command_behind(run: Run) -> None:
    run.etcd.put(("/cfg/a", "0"))
    run.start("--signal=SIGHUP")
    child = run.wait_started()["pid"]
    run.send(signal.SIGKILL)
    run.wait_exit()
    wait_for(lambda: not alive(child), 10, "the command to die with the dispenser")


def alive(pid: int) -> bool:
    """Running, and not a zombie waiting for someone to reap it."""
    try:
        with open(f"/proc/{pid}/stat") as stat_file:
            return stat_file.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def until(listener: socket.socket, first: str) -> list[str]:
    """The lines of the first datagram that starts with ``first`` (statuses may come before READY=1)."""
    while True:
        lines = listener.recv(4096).decode().split("\n")
        if lines[0].startswith(first):
            return lines


def test_systemd_hears_ready_status_and_stopping(run: Run, tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(path)
        listener.settimeout(15)
        run.etcd.put(("/cfg/a", "0"))
        run.start("--signal=SIGHUP", env=run.env(NOTIFY_SOCKET=path))
        ready = until(listener, "READY=1")
        assert "started " in run.log, "READY=1 comes once the command has been started"
        assert re.fullmatch(r"STATUS=revision \d+: generation \.\.\S+ is live \(1 files\)", ready[1])
        assert "NOTIFY_SOCKET" not in run.wait_started()["env"]
        revision = run.etcd.put(("/cfg/a", "1"))
        assert until(listener, "STATUS=")[0].startswith(f"STATUS=revision {revision}: generation ..")
        run.send(signal.SIGTERM)
        assert until(listener, "STOPPING=1") == ["STOPPING=1"]
        run.wait_exit()


def test_an_abstract_notification_socket(run: Run) -> None:
    name = f"dispenser-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind("\0" + name)
        listener.settimeout(15)
        run.etcd.put(("/cfg/a", "0"))
        run.start(env=run.env(NOTIFY_SOCKET="@" + name), command=[])
        assert until(listener, "READY=1")[1].startswith("STATUS=")
