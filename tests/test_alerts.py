"""The operator's kit: the alert rules under promtool, a real Prometheus scraping a real dispenser and
firing the staleness alert when its only member is cut off, and the rules and the dashboard naming
only metrics the tool exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from etcd_server import EtcdCluster, free_port
from harness import Run, get, metric, wait_for
from partition import Partition, own_data_dir, partition_or_skip

ROOT = Path(__file__).parent.parent
RULES = ROOT / "deploy" / "prometheus" / "alerts.yaml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts.test.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dispenser.json"


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"needs {name} (Debian's prometheus package; scripts/setup --tests installs it)")
    return found


def rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def test_the_rules_pass_promtool_and_their_unit_tests() -> None:
    promtool = tool("promtool")
    checked = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run([promtool, "test", "rules", str(RULE_TESTS)], capture_output=True, text=True)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_rule_is_tested_firing_and_quiet() -> None:
    cases = [
        case for test in yaml.safe_load(RULE_TESTS.read_text())["tests"] for case in test["alert_rule_test"]
    ]
    for rule in rules():
        mine = [case for case in cases if case["alertname"] == rule["alert"]]
        assert any(case["exp_alerts"] for case in mine), f"{rule['alert']} is never tested firing"
        assert any(not case["exp_alerts"] for case in mine), f"{rule['alert']} is never tested quiet"
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]


def test_the_rules_and_the_dashboard_name_only_exported_metrics(run: Run) -> None:
    run.etcd.put(("/cfg/a", "1"))
    port = free_port()
    run.start("--signal=SIGHUP", f"--metrics-address=127.0.0.1:{port}")
    run.wait_started()
    _code, text = get(port, "/metrics")
    exported = {re.split(r"[{ ]", line)[0] for line in text.splitlines() if line.startswith("dispenser_")}
    exported |= set(re.findall(r"^# HELP (dispenser_\w+)", text, re.M))
    expressions = [rule["expr"] for rule in rules()]
    expressions += [
        target["expr"] for panel in json.loads(DASHBOARD.read_text())["panels"] for target in panel["targets"]
    ]
    named = {name for expr in expressions for name in re.findall(r"\bdispenser_\w+", expr)}
    assert named and named <= exported, f"not exported: {sorted(named - exported)}"
    panels = {panel["title"] for panel in json.loads(DASHBOARD.read_text())["panels"]}
    assert {"Generations per minute", "Confirmation age", "Errors by kind", "Refused keys"} <= panels


class Prometheus:
    """A real Prometheus scraping one dispenser every second, evaluating ``rules`` every second."""

    def __init__(self, work: Path, target_port: int, rule_file: Path) -> None:
        self.port = free_port()
        work.mkdir(parents=True, exist_ok=True)
        config = work / "prometheus.yml"
        config.write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(rule_file)],
                    "scrape_configs": [
                        {
                            "job_name": "dispenser",
                            "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}],
                        }
                    ],
                }
            )
        )
        self.log = work / "prometheus.log"
        argv = [
            tool("prometheus"),
            f"--config.file={config}",
            f"--storage.tsdb.path={work / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=log)

    def alerts(self) -> dict[str, str]:
        """Prometheus' own view: alert name -> state (pending, firing), for the active alerts."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v1/alerts", timeout=5) as answer:
                found = json.load(answer)["data"]["alerts"]
        except OSError:
            return {}
        return {alert["labels"]["alertname"]: alert["state"] for alert in found}

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[EtcdCluster]:
    partition_or_skip()
    members = EtcdCluster(tmp_path / "cluster")
    for member in members.members:
        member.extra_args = ["--heartbeat-interval=100", "--election-timeout=1000"]
    with own_data_dir(members.members[0]):
        yield members


def test_prometheus_fires_the_staleness_alert_for_a_member_cut_off_and_resolves_it(
    tmp_path: Path, cluster: EtcdCluster
) -> None:
    # The shipped rule, with its 60 s threshold and 30 s hold brought down to 5 s and 1 s so that the
    # test takes seconds; promtool's unit tests hold the shipped numbers.
    shipped = yaml.safe_load(RULES.read_text())
    [stale] = [
        rule
        for group in shipped["groups"]
        for rule in group["rules"]
        if rule["alert"] == "DispenserFilesNotConfirmedCurrent"
    ]
    assert stale["expr"].endswith("> 60") and stale["for"] == "30s"
    stale["expr"], stale["for"] = stale["expr"].removesuffix("> 60") + "> 5", "1s"
    faster = tmp_path / "alerts.yaml"
    faster.write_text(yaml.safe_dump(shipped))
    with cluster.running():
        run = Run(tmp_path, cluster)
        port = free_port()
        prometheus = Prometheus(tmp_path / "prometheus", port, faster)
        try:
            cluster.put(("/cfg/a", "0"))
            only = run.env(ETCD_ENDPOINTS=cluster.members[0].endpoint)  # nowhere else to go
            run.start(
                "--signal=SIGHUP", "--confirm-interval=1s", f"--metrics-address=127.0.0.1:{port}", env=only
            )
            run.wait_started()
            wait_for(lambda: metric(port, "dispenser_last_sync_timestamp_seconds"), 10, "a confirmation")
            time.sleep(3)  # scraped and evaluated a few times while all is well
            assert "DispenserFilesNotConfirmedCurrent" not in prometheus.alerts()
            with Partition(cluster.members[0]):
                cluster.put(("/cfg/a", "1"))
                wait_for(
                    lambda: prometheus.alerts().get("DispenserFilesNotConfirmedCurrent") == "firing",
                    60,
                    f"the staleness alert firing; Prometheus' log: {prometheus.log}",
                )
            wait_for(
                lambda: "DispenserFilesNotConfirmedCurrent" not in prometheus.alerts(),
                60,
                "the staleness alert resolved once the partition healed",
            )
            assert run.files() == {"a": b"1"}
        finally:
            run.stop()
            prometheus.stop()
