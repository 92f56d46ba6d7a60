"""Real PostgreSQL behind the dispenser (both as the ``postgres`` user, or the dispenser as root giving
the key to ``postgres``): the server certificate and key and a file of ``include_dir`` come from etcd;
SIGHUP makes the postmaster reload them."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import ssl
import stat
import struct
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from etcd_server import EtcdServer, free_port
from harness import Run, wait_for
from pki import der, server_pair
from unprivileged import as_user, reachable_code, setpriv

SSL_REQUEST = struct.pack("!ii", 8, 80877103)  # the protocol's SSLRequest message


def postgres_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4]))
    if not found:
        pytest.skip("needs PostgreSQL (Debian's postgresql; scripts/setup --tests installs it)")
    return Path(found[-1]).parent


class Postgres:
    """A database cluster made with initdb as ``postgres``, configured to take its TLS files and an
    included setting from the dispenser's target."""

    def __init__(self, work: Path, target: Path, user: pwd.struct_passwd) -> None:
        self.bin = postgres_bin()
        self.port = free_port()
        self.data = work / "data"
        as_postgres = setpriv(user.pw_uid, user.pw_gid)
        initdb = [
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "--auth=trust",
            "-U",
            "postgres",
            "--no-sync",
        ]
        made = subprocess.run([*as_postgres, *initdb], capture_output=True, text=True, timeout=120)
        assert made.returncode == 0, made.stderr
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                f"port = {self.port}\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{work}'\n"
                "ssl = on\n"
                f"ssl_cert_file = '{target}/server.crt'\n"
                f"ssl_key_file = '{target}/server.key'\n"
                f"include_dir = '{target}/conf.d'\n"
            )

    def command(self) -> list[str]:
        return [str(self.bin / "postgres"), "-D", str(self.data)]

    def served(self) -> bytes:
        """The certificate (DER) the server presents after an SSLRequest."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as raw:
            raw.sendall(SSL_REQUEST)
            assert raw.recv(1) == b"S", "the server refused TLS"
            with context.wrap_socket(raw) as tls:
                certificate = tls.getpeercert(binary_form=True)
                assert certificate is not None
                return certificate

    def query(self, sql: str) -> str:
        psql = [
            str(self.bin / "psql"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-d",
            "postgres",
        ]
        done = subprocess.run(
            [*psql, "-Atc", sql],
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "PGSSLMODE": "disable"},
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()


@pytest.fixture
def postgres_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("needs the postgres user (Debian's postgresql package makes it)")


@pytest.fixture
def work(postgres_user: pwd.struct_passwd) -> Iterator[Path]:
    """A directory of the postgres user (tmp_path is root's alone)."""
    base = Path(tempfile.mkdtemp(prefix="dispenser-postgres-"))
    os.chmod(base, 0o755)
    (base / "box").mkdir()
    for path in (base, base / "box"):
        os.chown(path, postgres_user.pw_uid, postgres_user.pw_gid)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def seeded(
    work: Path, user: pwd.struct_passwd, etcd: EtcdServer
) -> tuple[Run, Postgres, tuple[tuple[bytes, bytes], tuple[bytes, bytes]]]:
    """A run, its database, and two certificate pairs, the first in etcd with a setting."""
    run = Run(work, etcd)
    database = Postgres(work, run.target, user)
    first, second = server_pair(), server_pair()
    etcd.put(
        ("/cfg/server.crt", first[0]),
        ("/cfg/server.key", first[1]),
        ("/cfg/conf.d/app.conf", "work_mem = '8MB'\n"),
    )
    return run, database, (first, second)


def test_postgresql_reloads_its_certificate_and_settings_and_is_never_restarted(
    work: Path, postgres_user: pwd.struct_passwd, etcd: EtcdServer
) -> None:
    run, database, (first, second) = seeded(work, postgres_user, etcd)
    with reachable_code() as paths:
        wrapper, env = as_user(postgres_user.pw_uid, postgres_user.pw_gid, paths, run.env())
        flags = ("--signal=SIGHUP", "--require=server.crt", "--require=server.key", "--require=conf.d")
        try:
            run.start(*flags, command=database.command(), env=env, wrapper=wrapper, program="projector")
            wait_for(lambda: _answers(database), 60, f"PostgreSQL to accept connections; log:\n{run.log}")
            assert database.served() == der(first[0])
            assert database.query("SHOW work_mem") == "8MB"
            started = database.query("SELECT pg_postmaster_start_time()")
            assert os.stat(run.target / "server.key").st_uid == postgres_user.pw_uid

            etcd.put(
                ("/cfg/server.crt", second[0]),
                ("/cfg/server.key", second[1]),
                ("/cfg/conf.d/app.conf", "work_mem = '16MB'\n"),
            )
            wait_for(
                lambda: database.served() == der(second[0]), 15, f"the rotated certificate; log:\n{run.log}"
            )
            wait_for(lambda: database.query("SHOW work_mem") == "16MB", 15, "the changed setting")
            assert database.query("SELECT pg_postmaster_start_time()") == started  # reloaded, not restarted

            run.send(signal.SIGTERM)
            assert run.wait_exit(60) == 0
            assert "database system is shut down" in run.log
        finally:
            run.stop()


def _answers(database: Postgres) -> bool:
    try:
        database.served()
    except OSError:
        return False
    return True


def test_a_root_dispenser_gives_the_key_to_postgres_and_keeps_the_certificate_readable(
    work: Path, postgres_user: pwd.struct_passwd, etcd: EtcdServer
) -> None:
    # The dispenser as root, PostgreSQL as its own user: the key must be owned by that user (the server
    # refuses one it does not own, unless it is root's and 0640 for its group), the certificate 0644.
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to run PostgreSQL as its own user under a root dispenser")
    run, database, (first, second) = seeded(work, postgres_user, etcd)
    flags = (
        "--signal=SIGHUP",
        "--file-owner=server.key=postgres",
        "--file-mode=server.crt=0644",
        "--file-mode=conf.d/*=0644",
    )
    as_postgres = setpriv(postgres_user.pw_uid, postgres_user.pw_gid)
    try:
        run.start(*flags, command=[*as_postgres, *database.command()])
        wait_for(lambda: _answers(database), 60, f"PostgreSQL to accept connections; log:\n{run.log}")
        key, certificate = os.stat(run.target / "server.key"), os.stat(run.target / "server.crt")
        assert (key.st_uid, stat.S_IMODE(key.st_mode)) == (postgres_user.pw_uid, 0o600)
        assert (certificate.st_uid, stat.S_IMODE(certificate.st_mode)) == (0, 0o644)
        assert database.served() == der(first[0])
        started = database.query("SELECT pg_postmaster_start_time()")

        etcd.put(("/cfg/server.crt", second[0]), ("/cfg/server.key", second[1]))
        wait_for(lambda: database.served() == der(second[0]), 15, f"the rotated certificate; log:\n{run.log}")
        assert database.query("SELECT pg_postmaster_start_time()") == started  # reloaded, not restarted
        assert os.stat(run.target / "server.key").st_uid == postgres_user.pw_uid
        run.send(signal.SIGTERM)
        assert run.wait_exit(60) == 0
    finally:
        run.stop()
