"""Scenario 5: the disk fills up, or the target stops being writable, while a generation is written.

The previous generation must stay live and intact, no partial generation may be left, the error is
logged once, and the write succeeds by itself (without a new change in etcd) once it can.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import Run, generations, wait_for

KIB = 1024


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs where Run puts its target (tmp_path/box)."""
    box = tmp_path / "box"
    box.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(box)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield box
    subprocess.run(["umount", "-l", str(box)], check=False)


def test_disk_full_keeps_the_live_generation_and_recovers(run: Run, small_disk: Path) -> None:
    run.etcd.put(("/cfg/a", b"a" * 300 * KIB))
    run.start("--signal=SIGHUP")
    run.wait_started()
    live = os.readlink(run.target / "..data")
    run.etcd.put(("/cfg/b", b"b" * 800 * KIB))
    run.wait_log("cannot write the target")
    time.sleep(2.0)  # several retries
    assert "No space left on device" in run.log
    assert run.log.count("cannot write the target") == 1
    assert generations(run.target) == [live]
    assert run.files() == {"a": b"a" * 300 * KIB}
    assert run.signals() == []
    subprocess.run(["mount", "-o", "remount,size=8m", str(small_disk)], check=True)
    record = run.wait_signals(1, timeout=40)[-1]
    assert set(record["files"]) == {"a", "b"}
    assert run.files()["b"] == b"b" * 800 * KIB
    assert "writing the target works again" in run.log


def test_changes_into_a_full_disk_do_not_put_the_retry_off(run: Run, small_disk: Path) -> None:
    """Twenty changes while the disk is full are twenty failed writes, but not twenty failed retries:
    the retry stays within its schedule (0.5 s, then 1 s, ...), and the last change goes live soon
    after the disk is freed, with no further change from etcd."""
    run.etcd.put(("/cfg/a", "0"))
    run.start("--signal=SIGHUP")
    run.wait_started()
    filler = small_disk / "filler"
    filler.write_bytes(bytes(960 * KIB))  # (the rest: less than one more file)
    for n in range(1, 21):
        run.etcd.put(("/cfg/a", f"{n}" + "x" * 100 * KIB))
        time.sleep(0.01)
    run.wait_log("writing the target still fails")
    filler.unlink()
    began = time.monotonic()
    record = run.wait_signals(1, timeout=10)[-1]  # (put off, the retry would wait 30 s)
    assert record["files"]["a"].startswith("20x")
    print(f"FIGURE twenty changes into a full disk: live {time.monotonic() - began:.1f} s after it was freed")


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv")
def test_permission_denied_keeps_the_live_generation_and_recovers(run: Run) -> None:
    # Root ignores permission bits; without CAP_DAC_OVERRIDE and CAP_FOWNER it is bound by them.
    run.etcd.put(("/cfg/a", "1"))
    drop = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--"]
    run.start("--signal=SIGHUP", command=None, wrapper=drop)
    run.wait_started()
    live = os.readlink(run.target / "..data")
    os.chmod(run.target, 0o555)
    try:
        run.etcd.put(("/cfg/a", "2"))
        run.wait_log("cannot write the target")
        time.sleep(2.0)  # several retries
        assert "Permission denied" in run.log and run.log.count("cannot write the target") == 1
        # the generation prepared ahead was written but cannot be removed from a read-only target
        assert os.readlink(run.target / "..data") == live and run.files() == {"a": b"1"}
        assert run.signals() == []
    finally:
        os.chmod(run.target, 0o700)
    assert run.wait_signals(1, timeout=40)[-1]["files"] == {"a": "2"}
    live = os.readlink(run.target / "..data")
    wait_for(lambda: generations(run.target) == [live], 15, "the failed generations removed")
