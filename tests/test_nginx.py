"""Real nginx behind the dispenser, as README's example runs it: TLS certificate and key from etcd,
SIGHUP on each change, README's own ``--check`` refusing a certificate that does not match its key."""

from __future__ import annotations

import shlex
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from etcd_server import free_port
from harness import Run, wait_for
from pki import der, https_get, server_pair

ROOT = Path(__file__).resolve().parent.parent
WORKERS = 2


def readme_check() -> str:
    """The ``--check`` of README's "Checking a candidate" example, exactly as written there."""
    text = (ROOT / "README.md").read_text()
    block = text.split("### Checking a candidate", 1)[1].split("```", 2)[1]
    argv = shlex.split(block.replace("\\\n", " "))
    return next(arg for arg in argv if arg.startswith("--check="))


class Nginx:
    """An nginx configuration serving HTTPS on a free loopback port with the projected files."""

    def __init__(self, work: Path, target: Path) -> None:
        self.work = work
        self.port = free_port()
        self.error_log = work / "error.log"
        self.config = work / "nginx.conf"
        kinds = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        temp = "".join(f"    {kind}_temp_path {work}/{kind};\n" for kind in kinds)
        self.config.write_text(
            f"worker_processes {WORKERS};\n"
            f"pid {work}/nginx.pid;\n"
            f"error_log {self.error_log} notice;\n"
            "events {}\n"
            "http {\n"
            "    access_log off;\n"
            f"{temp}"
            "    server {\n"
            f"        listen 127.0.0.1:{self.port} ssl;\n"
            f"        ssl_certificate {target}/cert.pem;\n"
            f"        ssl_certificate_key {target}/key.pem;\n"
            '        location / { return 200 "served\\n"; }\n'
            "    }\n"
            "}\n"
        )

    def command(self) -> list[str]:
        nginx = shutil.which("nginx", path="/usr/sbin:/usr/bin:/sbin:/bin")
        assert nginx
        return [nginx, "-p", str(self.work), "-c", str(self.config), "-e", str(self.error_log)]

    def served(self) -> bytes:
        """The certificate (DER) of one new TLS connection, after a whole HTTP request on it."""
        response, certificate = https_get(self.port)
        assert response.startswith(b"HTTP/1.1 200") and response.endswith(b"served\n"), response
        return certificate

    def log(self) -> str:
        return self.error_log.read_text() if self.error_log.exists() else ""

    def reloads(self) -> int:
        return self.log().count("(SIGHUP) received")

    def master(self) -> int:
        return int((self.work / "nginx.pid").read_text())

    def started(self) -> bool:
        """Its pid file whole (nginx creates it, then writes it) and all its workers up."""
        pid_file = self.work / "nginx.pid"
        return pid_file.exists() and pid_file.read_text().endswith("\n") and len(self.workers()) == WORKERS

    def workers(self) -> list[int]:
        return [pid for pid in child_pids(self.master()) if b"worker process" in cmdline(pid)]


@pytest.fixture
def nginx(run: Run) -> Iterator[Nginx]:
    if shutil.which("nginx", path="/usr/sbin:/usr/bin:/sbin:/bin") is None:
        pytest.skip("needs nginx (Debian's nginx; scripts/setup --tests installs it)")
    work = run.tmp_path / "nginx"
    work.mkdir()
    server = Nginx(work, run.target)
    yield server
    print(f"nginx error log:\n{server.log()}")


def start(run: Run, nginx: Nginx) -> tuple[bytes, bytes]:
    """The dispenser in front of nginx as README shows it; the first pair it serves."""
    pair = server_pair()
    run.etcd.put(("/cfg/cert.pem", pair[0]), ("/cfg/key.pem", pair[1]))
    flags = ("--signal=SIGHUP", "--require=cert.pem", "--require=key.pem", readme_check())
    run.start(*flags, command=[*nginx.command(), "-g", "daemon off;"])
    wait_for(nginx.started, 30, "nginx")
    assert nginx.served() == der(pair[0])
    return pair


def test_a_rotation_is_served_without_a_restart_and_a_mismatched_pair_never_reaches_nginx(
    run: Run, nginx: Nginx
) -> None:
    first = start(run, nginx)
    master = nginx.master()
    assert run.process is not None and master in child_pids(run.process.pid)

    second = server_pair()
    run.etcd.put(("/cfg/cert.pem", second[0]), ("/cfg/key.pem", second[1]))
    wait_for(lambda: nginx.served() == der(second[0]), 15, "the rotated certificate served")
    assert nginx.master() == master and nginx.reloads() == 1

    stranger = server_pair()
    run.etcd.put(("/cfg/cert.pem", stranger[0]))  # a certificate whose key is not the live one
    run.wait_log("--check", timeout=15)
    time.sleep(0.5)
    assert nginx.reloads() == 1  # never signalled for it
    assert nginx.served() == der(second[0])
    assert (run.target / "cert.pem").read_bytes() == second[0]  # the last good pair stays
    assert first != second and nginx.master() == master


def test_no_handshake_fails_through_a_burst_of_rotations(run: Run, nginx: Nginx) -> None:
    start(run, nginx)
    pairs = [server_pair(f"rotation-{n}") for n in range(20)]
    handshakes, failures = 0, []
    stop = threading.Event()

    def clients() -> None:
        nonlocal handshakes
        while not stop.is_set():
            try:
                nginx.served()
                handshakes += 1
            except (OSError, AssertionError) as exc:
                failures.append(repr(exc))

    threads = [threading.Thread(target=clients) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        for cert, key in pairs:
            run.etcd.put(("/cfg/cert.pem", cert), ("/cfg/key.pem", key))
            time.sleep(0.05)
        wait_for(lambda: nginx.served() == der(pairs[-1][0]), 15, "the last certificate served")
        time.sleep(0.5)  # handshakes after the last reload too
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert not failures and handshakes > 50, (handshakes, failures[:5])
    # a reload whose opens of cert.pem and key.pem straddled a swap is refused (README, "On disk"):
    # nothing else may fail, and the signal sent after that swap reloads a matching pair
    refused = [line for line in nginx.log().splitlines() if "[emerg]" in line]
    assert all("key values mismatch" in line for line in refused), refused
    wait_for(lambda: "start worker processes" in last_reload(nginx), 30, "the last reload done")
    assert "[emerg]" not in last_reload(nginx), last_reload(nginx)
    wait_for(lambda: len(nginx.workers()) == WORKERS, 30, f"{WORKERS} workers after the reloads")
    print(
        f"FIGURE nginx: {handshakes} handshakes, 0 failed, through {nginx.reloads()} reloads"
        f" ({len(refused)} refused for a swap between nginx's two opens)"
    )


def last_reload(nginx: Nginx) -> str:
    """What nginx logged since the last SIGHUP it received."""
    return nginx.log().rsplit("(SIGHUP) received", 1)[-1]


def test_sigterm_to_the_dispenser_stops_nginx(run: Run, nginx: Nginx) -> None:
    start(run, nginx)
    master, workers = nginx.master(), nginx.workers()
    run.send(signal.SIGTERM)
    assert run.wait_exit(20) == 0  # nginx's own status: it exits 0 after a TERM
    for pid in (master, *workers):
        wait_for(lambda pid=pid: not Path(f"/proc/{pid}").exists(), 10, f"nginx process {pid} gone")
    assert "exit" in nginx.log()


def child_pids(parent: int) -> set[int]:
    found = set()
    for pid in filter(str.isdigit, (p.name for p in Path("/proc").iterdir())):
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1] == str(parent):
                found.add(int(pid))
        except OSError:
            continue
    return found


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""
