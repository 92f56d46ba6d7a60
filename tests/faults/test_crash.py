"""Scenario 4: the dispenser SIGKILLed at random moments while it writes a 1,500-file generation.

After every kill the target must hold one whole generation (every file from one transaction); a
restart reaches etcd's latest state and leaves nothing behind; a reader that resolves ``..data`` once
and reads every file never sees two generations mixed. The same holds for a slow reader while
back-to-back changes reuse old generations instead of removing them.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from etcd_server import EtcdServer
from harness import Run, all_generations, wait_for

FILES = 1500
ROUNDS = 12


def values(round_: int) -> list[tuple[str, str]]:
    return [(f"/cfg/d{i % 30}/f{i}", f"round-{round_}-{i}-" + "x" * 200) for i in range(FILES)]


def read_generation(target: Path) -> set[str] | None:
    """Rounds seen in one generation, resolving ..data once; None if it vanished while read."""
    try:
        root = target / os.readlink(target / "..data")
        rounds, count = set(), 0
        for dirpath, _dirs, names in os.walk(root):
            for name in names:
                rounds.add((Path(dirpath) / name).read_text().split("-")[1])
                count += 1
    except FileNotFoundError:
        return None
    assert count == FILES, f"a generation with {count} files"
    return rounds


def newest_generation(target: Path) -> str:
    return all_generations(target)[-1]


@pytest.fixture
def big_etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    limits = ["--max-txn-ops=2000", "--max-request-bytes=16777216"]
    with EtcdServer(tmp_path / "etcd-data", limits).running() as server:
        yield server


def test_kills_during_writes_never_leave_a_mix(tmp_path: Path, big_etcd: EtcdServer) -> None:
    run = Run(tmp_path, big_etcd)
    big_etcd.put(*values(0))
    run.start("--once", command=[])
    assert run.wait_exit(60) == 0
    mixes, reads, stop = [], [0], threading.Event()

    def reader() -> None:
        while not stop.is_set():
            rounds = read_generation(run.target)
            if rounds is not None:
                reads[0] += 1
                if len(rounds) != 1:
                    mixes.append(rounds)

    thread = threading.Thread(target=reader)
    thread.start()
    rng = random.Random(4)
    try:
        for round_ in range(1, ROUNDS + 1):
            big_etcd.put(*values(round_))
            before = newest_generation(run.target)  # perhaps one a kill left unfinished
            run.start(command=[])
            # Kill soon after a new generation directory appears: mostly in the middle of filling it.
            wait_for(lambda b=before: newest_generation(run.target) > b, 30, "a new generation")
            time.sleep(rng.uniform(0, 0.08))
            run.send(signal.SIGKILL)
            run.wait_exit()
            seen = read_generation(run.target)
            assert seen is not None and len(seen) == 1 and int(next(iter(seen))) <= round_, seen
    finally:
        stop.set()
        thread.join()
        run.stop()
    assert mixes == []
    run.start("--once", command=[])
    assert run.wait_exit(60) == 0
    assert read_generation(run.target) == {str(ROUNDS)}
    leftovers = [n for n in os.listdir(run.target) if n.startswith("..") and n != "..data"]
    assert len(leftovers) == 1 and leftovers[0] == os.readlink(run.target / "..data")
    interrupted = run.log.count("removing unfinished generation")
    assert interrupted >= 1, "no kill landed while a generation was being written"
    print(
        f"FIGURE kills survived: {ROUNDS} ({interrupted} in the middle of writing a {FILES}-file "
        f"generation); a concurrent reader read {reads[0]} whole generations, none mixed"
    )


def test_readers_never_see_a_mix_while_generations_are_reused(tmp_path: Path, big_etcd: EtcdServer) -> None:
    """Back-to-back transactions leave no idle time to collect garbage, so old generations are renamed
    and patched into new ones: a reader that resolved ``..data`` must still read one whole generation."""
    files, rounds = 300, 40
    run = Run(tmp_path, big_etcd)
    big_etcd.put(*values(0)[:files])
    run.start(command=[])
    mixes, whole, stop = [], [0], threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                root = run.target / os.readlink(run.target / "..data")
                found = set()
                for i in range(files):
                    found.add((root / f"d{i % 30}" / f"f{i}").read_text().split("-")[1])
                    time.sleep(0.0001)  # a slow reader: its reads span changes
            except FileNotFoundError:
                if root.exists():  # a file gone from a generation still under its name: torn
                    mixes.append({"torn"})
                continue  # renamed for reuse: the reader learns it and reads anew
            whole[0] += 1
            if len(found) != 1:
                mixes.append(found)

    def live_round() -> str:
        return (run.target / "d0" / "f0").read_text().split("-")[1]

    try:
        wait_for(lambda: (run.target / "d0" / "f0").exists(), what="the first projection")
        thread = threading.Thread(target=reader)
        thread.start()
        try:
            for round_ in range(1, rounds + 1):
                big_etcd.put(*values(round_)[:files])
                wait_for(lambda: live_round() == str(round_), what=f"round {round_}")  # noqa: B023
        finally:
            stop.set()
            thread.join()
        assert "reusing generation" in run.log
    finally:
        run.stop()
    print(f"FIGURE reuse: {whole[0]} whole reads during {rounds} back-to-back rounds, {len(mixes)} mixed")
    assert not mixes and whole[0] > 0
