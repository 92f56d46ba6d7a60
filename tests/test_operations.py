"""Health, readiness and metrics over HTTP, and JSON log lines (issue 5, part 4)."""

from __future__ import annotations

import json

from etcd_server import free_port
from harness import Run, get, metric, wait_for


def test_readiness_health_and_metrics_follow_etcd(run: Run) -> None:
    revision = run.etcd.put(("/cfg/a", "1"), ("/cfg/../bad", "x"))
    run.etcd.kill()
    port = free_port()
    run.start("--signal=SIGHUP", f"--metrics-address=127.0.0.1:{port}")
    # the gauge is 0 from the start: wait for the first failed attempt to be counted, then read both
    wait_for(lambda: metric(port, 'dispenser_errors_total{kind="etcd"}'), 15, "the etcd error counted")
    assert (metric(port, 'dispenser_errors_total{kind="etcd"}') or 0) >= 1
    assert metric(port, "dispenser_etcd_connected") == 0.0
    assert get(port, "/readyz")[0] == 503
    assert get(port, "/healthz")[0] == 200
    run.etcd.start()
    run.wait_started(timeout=20)
    assert get(port, "/readyz")[0] == 200
    assert metric(port, "dispenser_applied_revision") == revision
    assert metric(port, "dispenser_etcd_connected") == 1.0
    assert metric(port, "dispenser_generations_total") == 1.0
    assert metric(port, "dispenser_rejected_keys") == 1.0
    assert (metric(port, "dispenser_last_sync_timestamp_seconds") or 0) > 1_700_000_000
    revision = run.etcd.put(("/cfg/a", "2"))
    run.wait_signals(1)
    wait_for(lambda: metric(port, "dispenser_signals_total") == 1.0, 5, "the signal counted")
    assert metric(port, "dispenser_applied_revision") == revision
    assert metric(port, "dispenser_generations_total") == 2.0
    assert get(port, "/nothing")[0] == 404
    # the target holds the projection and nothing else: no status or marker files (what is made
    # ahead for the next change is part of the layout)
    names = {path.name for path in run.target.iterdir()}
    layout = ("..data", "..blanks", "a")
    assert all(n in layout or n.startswith(("..data_tmp.", "..2")) for n in names), names


def test_json_log_lines(run: Run) -> None:
    run.etcd.put(("/cfg/a", "1"), ("/cfg/../bad", "x"))
    run.start("--once", "--log-format=json", command=[])
    assert run.wait_exit() == 0
    records = [json.loads(line) for line in run.log.splitlines()]
    assert records and all(set(r) == {"time", "level", "message"} for r in records)
    assert any(r["level"] == "warning" and "refusing key" in r["message"] for r in records)


def test_a_metrics_address_in_use_is_a_usage_error(run: Run) -> None:
    import socket
    import subprocess

    from harness import console_script

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        argv = [
            console_script(),
            "--prefix=/cfg",
            f"--target={run.target}",
            f"--metrics-address=127.0.0.1:{port}",
        ]
        done = subprocess.run(argv, env=run.env(), capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "--metrics-address" in done.stderr and len(done.stderr.splitlines()) == 1
    assert not run.target.exists()
