"""Scenarios 8 and 9: values never reach the logs, files and directories are private from the first
byte, and values of any size or content are projected byte for byte."""

from __future__ import annotations

import os
import stat

from harness import Run

MARK = "VALUE-MARK-Qp4"


def test_values_never_reach_the_logs_at_debug(run: Run) -> None:
    run.etcd.put(("/cfg/a", f"{MARK}-1"), ("/cfg/dir/b", f"{MARK}-2"), ("/cfg/../bad", f"{MARK}-3"))
    run.start("--signal=SIGHUP")
    run.wait_started()
    run.etcd.put(("/cfg/a", f"{MARK}-4"), ("/cfg/a/b", f"{MARK}-5"))
    run.wait_signals(1)
    run.etcd.delete("/cfg/a")
    run.wait_signals(2)
    run.etcd.restart()
    run.etcd.put(("/cfg/c", f"{MARK}-6"))
    run.wait_signals(3, timeout=20)
    assert "DEBUG" in run.log
    assert MARK not in run.log


def test_generations_are_private_with_mode_0600(run: Run) -> None:
    run.etcd.put(("/cfg/key.pem", "k"), ("/cfg/dir/sub/x", "x"))
    run.start("--once", command=[])
    assert run.wait_exit() == 0
    generation = run.target / os.readlink(run.target / "..data")
    for path in (generation, generation / "dir", generation / "dir" / "sub"):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o700, path
    for path in (generation / "key.pem", generation / "dir" / "sub" / "x"):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path


def test_values_of_any_size_and_content_byte_for_byte(run: Run) -> None:
    values = {
        "big": os.urandom(1024 * 1024),
        "empty": b"",
        "binary": bytes(range(256)) * 4,
        "crlf": b"line\r\nline\r\n\x00\xff",
    }
    run.etcd.put(*[(f"/cfg/{name}", value) for name, value in values.items()])
    run.start("--once", command=[])
    assert run.wait_exit() == 0
    assert run.files() == values
    values["empty"], values["big"] = b"now something", b""
    run.etcd.put(("/cfg/empty", values["empty"]), ("/cfg/big", values["big"]))
    run.start("--once", command=[])
    assert run.wait_exit() == 0
    assert run.files() == values
