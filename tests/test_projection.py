"""One projection step on its own: batches in, an outcome and a generation on disk out.

No etcd, no threads, no grpc: the step is plain logic over the key table and the writer, on a
temporary directory. The end-to-end tests run it behind a real etcd.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

from projector.batches import Batch, Confirmation
from projector.hooks import Hooks
from projector.metrics import Metrics
from projector.projection import Outcome, Projection
from projector.settings import load_options


def projection(target: Path, **options: object) -> tuple[Projection, Metrics]:
    metrics = Metrics()
    settings = load_options(prefix="/p", target=str(target), **options)
    hooks = Hooks(settings.check, settings.on_change, dict(os.environ), metrics)
    step = Projection(settings, hooks, metrics)
    step.writer.open()
    return step, metrics


def live(target: Path) -> dict[str, bytes]:
    root = target / "..data"
    return {name: (root / name).read_bytes() for name in os.listdir(root)}


def test_a_batch_swaps_once_and_the_same_state_again_changes_nothing(tmp_path: Path) -> None:
    step, metrics = projection(tmp_path / "t")
    assert step.apply([Batch(3, {b"/p/a": b"1", b"/p/b": b"2"}, snapshot=True)]).outcome is Outcome.SWAPPED
    assert live(tmp_path / "t") == {"a": b"1", "b": b"2"}
    assert step.apply([Batch(4, {b"/p/a": b"1"})]).outcome is Outcome.UNCHANGED
    assert metrics.applied_revision.value == 4 and metrics.generations.value == 1
    assert step.settled() is not None and step.settled().revision == 4  # type: ignore[union-attr]
    assert step.status().startswith("STATUS=revision 4: generation ..")


def test_a_refused_candidate_and_a_failed_write_leave_the_live_files(tmp_path: Path) -> None:
    target = tmp_path / "t"
    step, _metrics = projection(target, check="false")
    assert step.apply([Batch(2, {b"/p/a": b"1"}, snapshot=True)]).outcome is Outcome.REJECTED
    assert not (target / "..data").exists() and step.settled() is None
    step, _metrics = projection(target)
    assert step.apply([Batch(2, {b"/p/a": b"1"}, snapshot=True)]).outcome is Outcome.SWAPPED
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, limits[1]))  # EFBIG past 4 KiB, even for root
    try:
        failed = step.apply([Batch(3, {b"/p/a": b"2" * 8192})])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
    assert failed.outcome is Outcome.FAILED and "File too large" in str(failed.why)
    assert live(target) == {"a": b"1"} and step.settled() is None
    assert step.apply([]).outcome is Outcome.SWAPPED  # the held value is written on the retry
    assert live(target) == {"a": b"2" * 8192}


def test_a_confirmation_waits_for_the_files_to_hold_it(tmp_path: Path) -> None:
    step, metrics = projection(tmp_path / "t")
    step.confirmed(Confirmation(5, at=1000.0, current=False))
    assert metrics.last_sync.value == 0  # nothing on disk yet
    step.apply([Batch(5, {b"/p/a": b"1"}, snapshot=True)])
    assert metrics.last_sync.value == 1000.0


def test_the_step_and_the_key_table_load_no_grpc() -> None:
    code = (
        "import sys, projector.projection, projector.keytable; "
        "print(sorted(m for m in sys.modules if 'grpc' in m))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"
