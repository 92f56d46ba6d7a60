"""Scenario 6: hostile keys. None escapes the target, none stops the good keys, each gets one
warning that names it (escaped) and never its value."""

from __future__ import annotations

import os
from pathlib import Path

from harness import Run

SECRET = b"SECRET-VALUE-never-logged"
HOSTILE: list[bytes] = [
    b"/cfg/../escape",
    b"/cfg/a/../../escape2",
    b"/cfg/../../../../tmp/escape3",
    b"/cfg//abs",
    b"/cfg//tmp/escape4",
    b"/cfg/..data",
    b"/cfg/..data/evil",
    b"/cfg/..2020_01_01_00_00_00.000000000",
    b"/cfg/..data_tmp.x",
    b"/cfg/.",
    b"/cfg/",
    b"/cfg/nul\0byte",
    b"/cfg/bad\xffutf8",
    b"/cfg/line\nbreak/..",
    b"/cfg/" + b"s" * 300,
    b"/cfg/" + b"/".join([b"p" * 200] * 21),
    b"/cfg/trailing/",
    b"/cfg/x/./y",
    b"/cfg/conflict/below",
    b"/cfg/operator-notes",
    # would normalise to the same path as /cfg/same/x
    b"/cfg/same//x",
    b"/cfg/./same/x",
    b"/cfg/same/./x",
]


def test_hostile_keys_are_refused_one_warning_each_and_nothing_escapes(run: Run, tmp_path: Path) -> None:
    run.target.mkdir(parents=True)
    (run.target / "operator-notes").write_text("mine")
    half = len(HOSTILE) // 2
    run.etcd.put(
        *[(key, SECRET) for key in HOSTILE[:half]], (b"/cfg/conflict", b"file wins"), (b"/cfg/good", b"ok")
    )
    run.start("--signal=SIGHUP")
    assert run.wait_started()["files"] == {"conflict": "file wins", "good": "ok"}
    # the rest arrive through the watch, together with a good key
    run.etcd.put(*[(key, SECRET) for key in HOSTILE[half:]], (b"/cfg/same/x", b"same"))
    record = run.wait_signals(1)[-1]
    assert record["files"] == {
        "conflict": "file wins",
        "good": "ok",
        "same/x": "same",
    }
    run.etcd.put((b"/cfg/good", b"still flowing"))
    assert run.wait_signals(2)[-1]["files"]["good"] == "still flowing"
    assert run.files()["operator-notes"] == b"mine"
    assert not (run.target / "operator-notes").is_symlink()
    assert os.listdir(run.target.parent) == ["target"]
    escaped = [p for p in Path("/tmp").glob("escape*")] + [p for p in tmp_path.rglob("escape*")]
    assert escaped == []
    warnings = [line for line in run.log.splitlines() if "refusing key" in line]
    assert len(warnings) == len(HOSTILE), "\n".join(warnings)
    assert SECRET.decode() not in run.log
    assert all("\0" not in line for line in warnings)
    assert any("line\\nbreak" in line for line in warnings)  # escaped: it cannot forge a log line
