"""The Dockerfile's images and compose.yaml, built and run for real with podman: every stage builds, the
image's dispenser runs on a read-only root and leaves nothing behind when killed, and compose.yaml does
what README promises (HTTPS with the certificate of ./examples/certs, a rotation reaching nginx without a
restart, the sidecar's volume read by another container).

The base images are the public ones where a registry answers; elsewhere scripts/container-images builds
stand-ins from Debian's packages and says so in its output (printed here, so a run's log tells which)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from etcd_server import EtcdServer
from harness import wait_for
from pki import der, https_get

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("build", "tools", "nginx", "image")
TAG = "localhost/etcd-config-dispenser-test"
PROJECT = "dispenser-test"
SERVICES = ("etcd", "push", "nginx", "sidecar", "reader")


def podman_env() -> dict[str, str]:
    """podman's settings for this machine kind (tests/containers.conf) unless the caller set their own."""
    return {"CONTAINERS_CONF": str(ROOT / "tests" / "containers.conf"), **os.environ}


def podman(*argv: str, timeout: float = 600, check: bool = True) -> str:
    done = subprocess.run(
        ["podman", *argv], env=podman_env(), capture_output=True, text=True, timeout=timeout
    )
    if check:
        assert done.returncode == 0, f"podman {' '.join(argv)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout.strip()


@pytest.fixture(scope="module")
def images() -> dict[str, str]:
    """Every stage of the Dockerfile built; stage -> image name."""
    missing = [tool for tool in ("podman", "podman-compose", "runc") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (scripts/setup --tests installs them)")
    bases = subprocess.run(
        [str(ROOT / "scripts" / "container-images")], env=podman_env(), capture_output=True, text=True
    )
    print(bases.stdout, bases.stderr)
    assert bases.returncode == 0, bases.stderr[-3000:]
    for stage in STAGES:
        podman(
            "build",
            "--quiet",
            "--pull=never",
            "--network=host",
            "--target",
            stage,
            "-t",
            f"{TAG}:{stage}",
            str(ROOT),
        )
    return {stage: f"{TAG}:{stage}" for stage in STAGES}


def test_the_image_runs_on_a_read_only_root_with_no_writable_tmp(
    images: dict[str, str], etcd: EtcdServer, tmp_path: Path
) -> None:
    etcd.put(("/cfg/cert.pem", "C1"), ("/cfg/sub/key.pem", "K1"))
    out = tmp_path / "out"
    out.mkdir()
    argv = ["run", "--rm", "--read-only", "--read-only-tmpfs=false", "--network=host"]
    argv += ["-e", f"ETCD_ENDPOINTS={etcd.endpoints}", "-v", f"{out}:/out", images["image"]]
    started = time.monotonic()
    podman(*argv, "--prefix=/cfg", "--target=/out/target", "--once", timeout=120)
    print(f"FIGURE image on a read-only root: --once took {time.monotonic() - started:.2f} s with podman run")
    assert (out / "target" / "cert.pem").read_text() == "C1"
    assert (out / "target" / "sub" / "key.pem").read_text() == "K1"
    # the root really is read-only: nothing else in the container can be written
    probe = ["run", "--rm", "--read-only", "--read-only-tmpfs=false", "--entrypoint=/bin/sh", images["image"]]
    assert "Read-only file system" in podman(*probe, "-c", "touch /tmp/x 2>&1 || true")


def test_a_killed_container_leaves_nothing_in_tmp(
    images: dict[str, str], etcd: EtcdServer, tmp_path: Path
) -> None:
    etcd.put(("/cfg/cert.pem", "C1"))
    out, tmp = tmp_path / "out", tmp_path / "tmp"
    out.mkdir()
    tmp.mkdir()
    argv = ["run", "-d", "--read-only", "--read-only-tmpfs=false", "--network=host"]
    argv += ["-e", f"ETCD_ENDPOINTS={etcd.endpoints}", "-v", f"{out}:/out", "-v", f"{tmp}:/tmp"]
    container = podman(*argv, images["image"], "--prefix=/cfg", "--target=/out/target", "--", "sleep", "600")
    try:
        wait_for(lambda: (out / "target" / "cert.pem").exists(), 60, "the first projection")
        podman("kill", "-s", "KILL", container)
        podman("wait", container, check=False)
        assert list(tmp.iterdir()) == []  # nothing unpacked at start, so nothing left behind
    finally:
        podman("rm", "-f", container, check=False)


@pytest.fixture
def compose(images: dict[str, str]) -> Iterator[list[str]]:
    """compose.yaml up with podman-compose, as README runs it; the command that drives it; torn down."""
    subprocess.run([str(ROOT / "scripts" / "make-example-certs")], check=True, capture_output=True)
    command = ["podman-compose", "-p", PROJECT, "-f", str(ROOT / "compose.yaml")]

    def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*command, *argv], env=podman_env(), capture_output=True, text=True, timeout=600
        )
        assert not check or done.returncode == 0, f"{argv}: {done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done

    run("down", "-v", check=False)  # a run that was itself killed
    try:
        run("up", "-d", "--build")
        yield command
    finally:
        for service in SERVICES:
            print(f"--- {service}:\n{logs(service)[-2000:]}")
        run("down", "-v", check=False)


def container(service: str) -> str:
    return f"{PROJECT}_{service}_1"


def logs(service: str) -> str:
    """What a service's container wrote, both streams."""
    done = subprocess.run(
        ["podman", "logs", container(service)],
        env=podman_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=60,
    )
    return done.stdout


def served_certificate() -> bytes | None:
    """The certificate compose's nginx serves on https://localhost:8443/ (DER); None until it answers."""
    try:
        response, certificate = https_get(8443)
    except OSError:
        return None
    return certificate if b"served with the certificate from etcd" in response else None


def example_certificate() -> bytes:
    return der((ROOT / "examples" / "certs" / "cert.pem").read_text())


def test_compose_serves_the_example_certificate_and_a_rotation_reaches_nginx_without_a_restart(
    compose: list[str],
) -> None:
    def running() -> set[str]:
        names = podman(
            "ps", "--filter", f"label=io.podman.compose.project={PROJECT}", "--format", "{{.Names}}"
        )
        return set(names.split())

    wait_for(lambda: {container(s) for s in SERVICES} <= running(), 120, f"every service up: {running()}")
    wait_for(lambda: served_certificate() == example_certificate(), 120, "nginx serving ./examples/certs")
    curl = subprocess.run(
        ["curl", "-sk", "https://localhost:8443/"], capture_output=True, text=True, timeout=30
    )
    assert curl.stdout == "served with the certificate from etcd (cert.pem, key.pem)\n", curl  # rendered
    nginx = container("nginx")
    master = podman("exec", nginx, "cat", "/proc/1/task/1/children")  # nginx's master, the dispenser's child
    started = podman("inspect", "--format", "{{.State.StartedAt}}", nginx)
    assert master.isdigit(), master

    subprocess.run([str(ROOT / "scripts" / "make-example-certs")], check=True, capture_output=True)
    rotated = example_certificate()
    wait_for(lambda: served_certificate() == rotated, 60, "the rotated certificate served")
    assert podman("exec", nginx, "cat", "/proc/1/task/1/children") == master
    assert podman("inspect", "--format", "{{.State.StartedAt}}", nginx) == started

    # the template edited on the host, as in local development: rendered anew, nginx reloaded in place
    site = ROOT / "examples" / "templates" / "site.conf.j2"
    original = site.read_text()
    try:
        edited = site.with_name("site.conf.j2.edited")
        edited.write_text(original.replace("served with", "now served with"))
        edited.rename(site)  # as editors save
        wait_for(lambda: b"now served with" in https_get(8443)[0], 60, "the edited template served")
    finally:
        site.write_text(original)
    assert podman("exec", nginx, "cat", "/proc/1/task/1/children") == master

    # the sidecar's volume, read by another container
    reader = ["exec", container("reader"), "cat", "/shared/certs/cert.pem"]
    wanted = (ROOT / "examples" / "certs" / "cert.pem").read_text().strip()
    wait_for(lambda: podman(*reader, check=False) == wanted, 30, "the reader seeing the sidecar's files")
