"""etcd-config-push against a real etcd: one transaction per push, deletes, refusals, --watch."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from etcd_server import EtcdServer
from harness import Run, wait_for


def push(etcd: EtcdServer, source: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    command = shutil.which("etcd-config-push", path=os.path.dirname(sys.executable))
    assert command
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")} | {
        "ETCD_ENDPOINTS": etcd.endpoints
    }
    argv = [command, "--prefix=/cfg", f"--source={source}", *flags]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)


def state(etcd: EtcdServer) -> tuple[int, dict[bytes, bytes]]:
    with etcd.client() as client:
        response = client.get_prefix_response("/")
        return int(response.header.revision), {kv.key: kv.value for kv in response.kvs}


def test_a_multi_file_change_is_one_transaction_and_one_signal(run: Run, tmp_path: Path) -> None:
    source = tmp_path / "certs"
    (source / "sub").mkdir(parents=True)
    (source / "cert.pem").write_text("C1")
    (source / "key.pem").write_text("K1")
    (source / "sub" / "old").write_text("old")
    (source / ".hidden").write_text("skip")
    (source / "edit.swp").write_text("skip")
    (source / "backup~").write_text("skip")
    run.etcd.put(("/other/key", "untouched"), ("/cfgX", "untouched"))
    assert push(run.etcd, source).returncode == 0
    revision, keys = state(run.etcd)
    assert keys == {
        b"/cfg/cert.pem": b"C1",
        b"/cfg/key.pem": b"K1",
        b"/cfg/sub/old": b"old",
        b"/other/key": b"untouched",
        b"/cfgX": b"untouched",
    }
    run.start("--signal=SIGHUP")
    run.wait_started()
    (source / "cert.pem").write_text("C2")
    (source / "key.pem").write_text("K2")
    (source / "sub" / "old").unlink()
    assert push(run.etcd, source).returncode == 0
    after, keys = state(run.etcd)
    assert after == revision + 1  # puts and the delete: one transaction
    assert b"/cfg/sub/old" not in keys and keys[b"/other/key"] == b"untouched"
    assert run.wait_signals(1)[-1]["files"] == {"cert.pem": "C2", "key.pem": "K2"}
    assert push(run.etcd, source).returncode == 0  # unchanged: nothing is sent
    assert state(run.etcd)[0] == after


def test_refusals_are_made_before_anything_is_sent(etcd: EtcdServer, tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "good").write_text("g")
    os.close(os.open(os.path.join(os.fsencode(source), b"bad\xffname"), os.O_CREAT | os.O_WRONLY, 0o600))
    before = state(etcd)
    done = push(etcd, source)
    assert done.returncode == 2 and "not valid UTF-8" in done.stderr and "nothing was sent" in done.stderr
    assert state(etcd) == before
    outside = tmp_path / "outside.txt"
    outside.write_text("secret")
    os.unlink(os.path.join(os.fsencode(source), b"bad\xffname"))
    (source / "link").symlink_to(outside)
    assert push(etcd, source).returncode == 0
    assert b"/cfg/link" not in state(etcd)[1]  # a link out of the source is not followed


def test_an_empty_or_missing_source_deletes_only_with_allow_empty(etcd: EtcdServer, tmp_path: Path) -> None:
    etcd.put(("/cfg/a", "1"))
    for source in (tmp_path / "missing", tmp_path / "empty"):
        (tmp_path / "empty").mkdir(exist_ok=True)
        done = push(etcd, source)
        assert done.returncode == 2 and "--allow-empty" in done.stderr
        assert state(etcd)[1] == {b"/cfg/a": b"1"}
    assert push(etcd, tmp_path / "empty", "--allow-empty").returncode == 0
    assert state(etcd)[1] == {}


def test_too_many_operations_are_refused_naming_the_limit(etcd: EtcdServer, tmp_path: Path) -> None:
    source = tmp_path / "many"
    source.mkdir()
    for n in range(130):
        (source / f"f{n}").write_text(str(n))
    done = push(etcd, source)
    assert done.returncode == 2 and "128" in done.stderr and "--max-txn-ops" in done.stderr
    assert state(etcd)[1] == {}


def test_dry_run_prints_names_and_sizes_never_values(etcd: EtcdServer, tmp_path: Path) -> None:
    etcd.put(("/cfg/gone", "x"))
    source = tmp_path / "src"
    source.mkdir()
    (source / "new").write_text("SECRET-VALUE")
    done = push(etcd, source, "--dry-run")
    assert done.returncode == 0
    assert "put '/cfg/new' (12 bytes)" in done.stdout and "delete '/cfg/gone'" in done.stdout
    assert "SECRET-VALUE" not in done.stdout + done.stderr
    assert state(etcd)[1] == {b"/cfg/gone": b"x"}


def test_watch_pushes_each_settled_edit(etcd: EtcdServer, tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "a").write_text("1")
    command = shutil.which("etcd-config-push", path=os.path.dirname(sys.executable))
    assert command
    env = {**os.environ, "ETCD_ENDPOINTS": etcd.endpoints}
    process = subprocess.Popen([command, "--prefix=/cfg", f"--source={source}", "--watch"], env=env)
    try:
        wait_for(lambda: state(etcd)[1] == {b"/cfg/a": b"1"}, 15, "the first push")
        (source / "a").write_text("2")
        (source / "b").write_text("3")
        wait_for(lambda: state(etcd)[1] == {b"/cfg/a": b"2", b"/cfg/b": b"3"}, 15, "the edit pushed")
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
    finally:
        process.kill()
