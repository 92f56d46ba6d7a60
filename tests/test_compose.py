"""compose.yaml and the Dockerfile hold together: every file, build context, stage and command they
name exists and parses (no Docker engine is needed for this; building the images is not tested here)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml

from projector.cli import parse
from projector.push import _parser as push_parser
from projector.settings import load_options

ROOT = Path(__file__).resolve().parent.parent


def dockerfile_stages() -> dict[str, str]:
    """Stage name -> its text."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    parts = re.split(r"^FROM\s+\S+\s+AS\s+(\S+)\s*$", text, flags=re.MULTILINE | re.IGNORECASE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_compose_names_only_what_exists() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert {"etcd", "push", "nginx", "sidecar", "reader"} <= set(services)
    stages = dockerfile_stages()
    for name, service in services.items():
        build = service.get("build")
        if build:
            assert (ROOT / build["context"]).is_dir(), name
            assert build["target"] in stages, (name, build["target"])
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), (name, source)
            else:
                assert source in compose["volumes"], (name, source)
    push = services["push"]["command"]
    assert push[0] == "etcd-config-push"
    push_parser().parse_args(push[1:])
    load_options(**parse(services["sidecar"]["command"]))


def test_dockerfile_copies_what_exists_and_runs_valid_commands() -> None:
    stages = dockerfile_stages()
    assert {"build", "tools", "nginx", "image"} <= set(stages)
    for stage in stages.values():
        for line in stage.splitlines():
            words = line.split()
            if words[:1] == ["COPY"] and not words[1].startswith("--from"):
                for source in words[1:-1]:
                    assert (ROOT / source).exists(), source
    cmd = re.search(r"^CMD\s+(\[.*\])\s*$", stages["nginx"], flags=re.MULTILINE)
    assert cmd is not None
    argv = json.loads(cmd.group(1))
    options = load_options(**parse(argv[1:]))
    assert options.signal is not None and options.signal.name == "SIGHUP" and options.command[0] == "nginx"


def test_example_certificates_match_their_key() -> None:
    subprocess.run([str(ROOT / "scripts" / "make-example-certs")], check=True, capture_output=True)
    certs = ROOT / "examples" / "certs"

    def public_key(*argv: str) -> str:
        return subprocess.run(argv, check=True, capture_output=True, text=True).stdout

    cert_key = public_key("openssl", "x509", "-noout", "-pubkey", "-in", str(certs / "cert.pem"))
    assert cert_key == public_key("openssl", "pkey", "-pubout", "-in", str(certs / "key.pem"))


def test_the_systemd_unit_runs_valid_flags_as_a_notify_service() -> None:
    import configparser
    import shlex

    unit = configparser.ConfigParser(interpolation=None, strict=False)
    text = (ROOT / "packaging" / "etcd-config-dispenser-nginx.service").read_text().replace("\\\n", " ")
    unit.read_string(text)
    service = unit["Service"]
    assert service["Type"] == "notify"
    argv = shlex.split(service["ExecStart"])
    assert argv[0].endswith("/etcd-config-dispenser")
    options = load_options(**parse(argv[1:]))
    assert options.require == ("cert.pem", "key.pem") and options.command[0] == "/usr/sbin/nginx"
