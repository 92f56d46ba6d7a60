"""The console script as a process, with a real child, against a real etcd."""

from __future__ import annotations

import os
import signal
import stat
import sys
import time
from pathlib import Path

from harness import Run, generations, wait_for


def test_first_projection_is_complete_before_the_child_starts(run: Run) -> None:
    run.etcd.put(("/cfg/cert.pem", "CERT-1"), ("/cfg/key.pem", "KEY-1"), ("/cfg/sub/dir/deep.conf", "deep"))
    run.start("--signal=SIGHUP")
    start = run.wait_started()
    assert start["files"] == {"cert.pem": "CERT-1", "key.pem": "KEY-1", "sub/dir/deep.conf": "deep"}
    assert run.files() == {"cert.pem": b"CERT-1", "key.pem": b"KEY-1", "sub/dir/deep.conf": b"deep"}
    assert run.signals() == []


def test_each_transaction_gives_one_signal_and_a_consistent_set(run: Run) -> None:
    run.etcd.put(("/cfg/cert.pem", "CERT-0"), ("/cfg/key.pem", "KEY-0"))
    run.start("--signal=hup")
    run.wait_started()
    for n in range(1, 6):
        run.etcd.put(("/cfg/cert.pem", f"CERT-{n}"), ("/cfg/key.pem", f"KEY-{n}"))
        record = run.wait_signals(n)[-1]
        assert record["files"] == {"cert.pem": f"CERT-{n}", "key.pem": f"KEY-{n}"}
    time.sleep(0.3)
    assert len(run.signals()) == 5


def test_a_put_that_changes_nothing_sends_no_signal(run: Run) -> None:
    run.etcd.put(("/cfg/a", "same"))
    run.start("--signal=SIGUSR1")
    run.wait_started()
    revision = run.etcd.put(("/cfg/a", "same"))
    run.wait_log(f"revision {revision}: nothing changed on disk")
    run.etcd.put(("/cfg/b", "new"))
    records = run.wait_signals(1, "SIGUSR1")
    time.sleep(0.3)
    assert len(run.signals("SIGUSR1")) == 1
    assert records[0]["files"] == {"a": "same", "b": "new"}


def test_deletes_and_nested_keys(run: Run) -> None:
    run.etcd.put(("/cfg/top", "t"), ("/cfg/a/b/c.txt", "c"), ("/cfg/a/d.txt", "d"))
    run.start("--signal=SIGHUP", "--allow-empty")  # the last delete empties the target
    run.wait_started()
    run.etcd.delete("/cfg/a/b/c.txt", "/cfg/top")
    record = run.wait_signals(1)[-1]
    assert record["files"] == {"a/d.txt": "d"}
    assert run.files() == {"a/d.txt": b"d"}
    assert not os.path.lexists(run.target / "top")
    run.etcd.delete("/cfg/a/d.txt")
    assert run.wait_signals(2)[-1]["files"] == {}
    assert [name for name in os.listdir(run.target) if not name.startswith("..")] == []
    assert not os.path.lexists(run.target / "a")


def test_keys_outside_the_prefix_directory_are_ignored(run: Run) -> None:
    run.etcd.put(("/cfg/in", "1"), ("/cfgX/out", "2"), ("/cfg", "3"), ("/other", "4"))
    run.start("--once", command=[])
    assert run.wait_exit() == 0
    assert run.files() == {"in": b"1"}


def test_layout_modes_and_garbage_collection(run: Run) -> None:
    run.etcd.put(("/cfg/a", "1"), ("/cfg/d/b", "2"))
    run.target.mkdir(parents=True)
    (run.target / "..data_tmp.leftover").symlink_to("nowhere")
    os.mkdir(run.target / "..2001_01_01_00_00_00.000000000")
    run.start("--signal=SIGHUP", "--mode=0640")
    run.wait_started()
    assert not os.path.lexists(run.target / "..data_tmp.leftover")
    assert not os.path.exists(run.target / "..2001_01_01_00_00_00.000000000")
    generation = os.readlink(run.target / "..data")
    assert generation.startswith("..") and (run.target / generation).is_dir()
    assert os.readlink(run.target / "a") == "..data/a" and os.readlink(run.target / "d") == "..data/d"
    assert stat.S_IMODE(os.stat(run.target / "a").st_mode) == 0o640
    assert stat.S_IMODE(os.stat(run.target / "d").st_mode) == 0o750
    assert stat.S_IMODE(os.stat(run.target / generation).st_mode) == 0o750
    inode = os.stat(run.target / "d" / "b").st_ino
    for n in range(8):
        run.etcd.put(("/cfg/a", f"v{n}"))
        run.wait_signals(n + 1)

    # while changes keep coming: the live one and the four newest replaced ones, and once the next
    # generation is made ahead (after the signal) at most three (the oldest is what it is made from)
    assert 1 < len(generations(run.target)) <= 5
    wait_for(lambda: len(generations(run.target)) <= 4, 15, "the next generation made ahead")
    # once quiet: only the live one after the grace (and the copy made ahead for the next change)
    wait_for(lambda: generations(run.target) == [os.readlink(run.target / "..data")], 15, "collection")
    # an unchanged file is hard-linked from generation to generation, never rewritten
    assert os.stat(run.target / "d" / "b").st_ino == inode


def test_usage_errors_exit_2_with_one_line_and_write_nothing(run: Run, tmp_path: Path) -> None:
    cases = [
        ([], {}, "--prefix"),
        (["--prefix=/cfg"], {}, "--target"),
        (["--prefix=/cfg", "--target=T", "--bogus"], {}, "--bogus"),
        (["--prefix=/cfg", "--target=T", "--mode=999"], {}, "--mode"),
        (["--prefix=/cfg", "--target=T", "--mode=rw"], {}, "--mode"),
        (["--prefix=/cfg", "--target=T", "--signal=SIGNOPE"], {}, "--signal"),
        (["--prefix=/cfg", "--target=T", "--signal=KILL"], {}, "--signal"),
        (["--prefix=/cfg", "--target=T", "--signal=stop"], {}, "--signal"),
        (["--prefix=/cfg", "--target=T", "--owner=no-such-user-x"], {}, "--owner"),
        (["--prefix=/cfg", "--target=T", "--group=no-such-group-x"], {}, "--group"),
        (["--prefix=", "--target=T"], {}, "--prefix"),
        (["--prefix=/cfg", "--target=T", "--once", "--", "true"], {}, "--once"),
        (["--prefix=/cfg", "--target=T", "--metrics-address=nowhere"], {}, "--metrics-address"),
        (["--prefix=/cfg", "--target=T", "--log-format=xml"], {}, "--log-format"),
        (["--prefix=/cfg", "--target=T", "--confirm-interval=often"], {}, "--confirm-interval"),
        (["--prefix=/cfg", "--target=T", "--confirm-interval=10ms"], {}, "--confirm-interval"),
        (["--prefix=/cfg", "--target=T", "--include=[abc"], {}, "--include"),
        (["--prefix=/cfg", "--target=T", "--exclude="], {}, "--exclude"),
        (["--prefix=/cfg", "--target=T", "--file-mode=*.crt=999"], {}, "--file-mode"),
        (["--prefix=/cfg", "--target=T", "--file-mode=0644"], {}, "--file-mode"),
        (["--prefix=/cfg", "--target=T", "--require=../outside"], {}, "--require"),
        (["--prefix=/cfg", "--target=T", "--wait=fast"], {}, "--wait"),
        (["--prefix=/cfg", "--target=T", "--wait=2s:1s"], {}, "--wait"),
        (["--prefix=/cfg", "--target=T", "--restart", "--signal=HUP", "--", "true"], {}, "--restart"),
        (["--prefix=/cfg", "--target=T", "--stop-timeout=soon"], {}, "--stop-timeout"),
        (["--prefix=/cfg", "--target=T", "--start-grace=later"], {}, "--start-grace"),
        (["--prefix=/cfg", "--target=T", "--max-removed=half"], {}, "--max-removed"),
        (["--prefix=/cfg", "--target=T", "--decode=*.der=rot13"], {}, "--decode"),
        (["--prefix=/cfg", "--target=T", "--decode=base64"], {}, "--decode"),
        (["--prefix=/cfg", "--target=T", "--file-owner=*.key=no-such-user-x"], {}, "--file-owner"),
        (["--prefix=/cfg", "--target=T", "--file-owner=*.key=:no-such-group-x"], {}, "--file-owner"),
        (["--prefix=/cfg", "--target=T", "--file-owner=postgres"], {}, "--file-owner"),
        (["--prefix=/cfg", "--prefix=/cfg/sub", "--target=T"], {}, "--prefix"),
        (["--prefix=/cfg", "--prefix=/cfg/", "--target=T"], {}, "--prefix"),
        (["--item=a=x", "--prefix=/cfg", "--prefix=/b", "--target=T"], {}, "--item"),
        (["--prefix=/cfg", "--target=T", "--item=tls.crt"], {}, "--item"),
        (["--prefix=/cfg", "--target=T", "--item=tls.crt=../up"], {}, "--item"),
        (["--prefix=/cfg", "--target=T", "--item=a=x", "--item=a=y"], {}, "--item"),
        (["--prefix=/cfg", "--target=T", "--item=a=x", "--item=b=x/y"], {}, "--item"),
        (["--prefix=/cfg", "--target=T"], {"ETCD_ENDPOINTS": "ftp://x:1"}, "ETCD_ENDPOINTS"),
        (["--prefix=/cfg", "--target=T"], {"ETCD_ENDPOINTS": "host:notaport"}, "ETCD_ENDPOINTS"),
        (["--prefix=/cfg", "--target=T"], {"ETCD_USERNAME": "u"}, "ETCD_PASSWORD"),
        (["--prefix=/cfg", "--target=T"], {"ETCD_PASSWORD": "hunter2"}, "ETCD_USERNAME"),
        (
            ["--prefix=/cfg", "--target=T"],
            {"ETCD_PASSWORD": "hunter2", "ETCD_PASSWORD_FILE": "/x", "ETCD_USERNAME": "u"},
            "ETCD_PASSWORD_FILE",
        ),
        (
            ["--prefix=/cfg", "--target=T"],
            {"ETCD_USERNAME_AND_PASSWORD": "nocolon"},
            "ETCD_USERNAME_AND_PASSWORD",
        ),
        (
            ["--prefix=/cfg", "--target=T"],
            {"ETCD_USERNAME_AND_PASSWORD": "u:p", "ETCD_USERNAME": "u"},
            "ETCD_USERNAME_AND_PASSWORD",
        ),
        (["--prefix=/cfg", "--target=T"], {"ETCD_SERVER_CA": "not pem"}, "ETCD_SERVER_CA"),
        (
            ["--prefix=/cfg", "--target=T"],
            {"ETCD_SERVER_CA_FILE": "/nonexistent/ca.pem"},
            "ETCD_SERVER_CA_FILE",
        ),
        (
            ["--prefix=/cfg", "--target=T"],
            {"ETCD_INSECURE_SKIP_VERIFY": "maybe"},
            "ETCD_INSECURE_SKIP_VERIFY",
        ),
    ]
    import subprocess

    from harness import console_script

    for flags, env, named in cases:
        argv = [console_script(), *[f.replace("=T", f"={tmp_path / 'T'}") for f in flags]]
        done = subprocess.run(argv, env=run.env(**env), capture_output=True, text=True, timeout=30)
        lines = done.stderr.splitlines()
        assert done.returncode == 2, (flags, env, done.stderr)
        assert len(lines) == 1 and named in lines[0], (flags, env, done.stderr)
        assert "hunter2" not in done.stderr and "Traceback" not in done.stderr
        assert not (tmp_path / "T").exists()


def test_exit_status_of_the_child_becomes_ours(run: Run) -> None:
    run.etcd.put(("/cfg/a", "1"))
    run.start(command=["sh", "-c", "exit 7"])
    assert run.wait_exit() == 7
    run.start(command=["sh", "-c", "kill -9 $$"])
    assert run.wait_exit() == 128 + 9


def test_signals_are_forwarded_and_the_secrets_stay_out_of_the_child(run: Run) -> None:
    run.etcd.put(("/cfg/a", "1"))
    env = run.env(ETCD_USERNAME_AND_PASSWORD_FILE="/nonexistent-but-unused")
    env.pop("ETCD_USERNAME_AND_PASSWORD_FILE")
    env["ETCD_CLIENT_KEY_FILE_UNRELATED"] = "kept"
    run.start(env={**env, "CHILD_TERM_EXIT": "3"})
    start = run.wait_started()
    assert "ETCD_ENDPOINTS" in start["env"] and "ETCD_CLIENT_KEY_FILE_UNRELATED" in start["env"]
    for sig, name in (
        (signal.SIGUSR1, "SIGUSR1"),
        (signal.SIGUSR2, "SIGUSR2"),
        (signal.SIGWINCH, "SIGWINCH"),
        (signal.SIGHUP, "SIGHUP"),
    ):
        run.send(sig)
        run.wait_signals(1, name)
    run.send(signal.SIGTERM)
    assert run.wait_exit() == 3
    assert len(run.signals("SIGTERM")) == 1


def test_once_projects_and_exits_without_a_child(run: Run) -> None:
    run.etcd.put(("/cfg/x", "1"))
    run.start("--once", command=[])
    assert run.wait_exit() == 0
    assert run.files() == {"x": b"1"}


def test_sidecar_mode_keeps_projecting_until_sigterm(run: Run) -> None:
    run.etcd.put(("/cfg/x", "1"))
    run.start(command=[])
    run.wait_log("is live")
    run.etcd.put(("/cfg/x", "2"))
    wait_for(lambda: run.files() == {"x": b"2"}, what="the update")
    run.send(signal.SIGTERM)
    assert run.wait_exit() == 0


def test_a_command_that_cannot_start_is_one_line_and_non_zero(run: Run) -> None:
    run.etcd.put(("/cfg/x", "1"))
    run.start(command=["/nonexistent/program"])
    assert run.wait_exit() == 127
    assert "cannot start '/nonexistent/program'" in run.log
    assert "Traceback" not in run.log


def test_python_dash_m_is_the_console_script(tmp_path: Path) -> None:
    import subprocess

    done = subprocess.run([sys.executable, "-m", "projector", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("etcd-config-dispenser ")


def test_orphans_of_the_child_are_reaped(run: Run, tmp_path: Path) -> None:
    run.etcd.put(("/cfg/a", "1"))
    pid_file = tmp_path / "orphan.pid"
    # The inner shell starts a short sleep and exits at once: the sleep is orphaned, and must end up
    # reaped by the dispenser (PID 1 in a container, a child subreaper elsewhere), not a zombie.
    script = f"sh -c 'sleep 1 & echo $! > {pid_file}'; exec sleep 60"
    run.start(command=["sh", "-c", script])
    orphan = int(wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), 10, "the orphan's pid"))
    assert run.process is not None

    def parent() -> int:
        with open(f"/proc/{orphan}/stat") as stat_file:
            return int(stat_file.read().rpartition(")")[2].split()[1])

    assert wait_for(lambda: parent() == run.process.pid, 5, "the orphan to be reparented to the dispenser")
    wait_for(lambda: not os.path.exists(f"/proc/{orphan}"), 10, "the orphan to be reaped, not a zombie")
    assert run.process.poll() is None
