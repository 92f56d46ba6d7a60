"""Cutting one etcd member off from its peers on loopback, while its clients still reach it.

The member runs as a user of its own (``Member.uid``); iptables then drops, on the loopback interface
only, every packet that member sends except from its client port, every packet to its peer port, and
every packet of a connection it has sent on (marked with CONNMARK), while packets to and from its
client port pass. Its peers keep a quorum between them; the member itself loses its leader, but still
answers clients.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

import pytest
from etcd_server import Member

PARTITIONED_UID = 64999  # a user nothing else on the machine runs as
MARK = "0x5e7"


def partition_or_skip() -> None:
    """Skip, saying why, where iptables rules on loopback cannot be made."""
    if os.geteuid() != 0:
        pytest.skip("cutting a member off needs root (iptables on loopback)")
    for tool in ("iptables", "setpriv"):
        if not shutil.which(tool):
            pytest.skip(f"cutting a member off needs {tool}")
    probe = ["-p", "tcp", "--dport", "1", "-m", "owner", "--uid-owner", str(PARTITIONED_UID), "-j", "DROP"]
    added = subprocess.run(
        ["iptables", "-w", "-I", "OUTPUT", "-o", "lo", *probe], capture_output=True, text=True, check=False
    )
    if added.returncode != 0:
        pytest.skip(f"iptables cannot match by owner here: {added.stderr.strip()}")
    subprocess.run(["iptables", "-w", "-D", "OUTPUT", "-o", "lo", *probe], check=True)


@contextmanager
def own_data_dir(member: Member) -> Iterator[None]:
    """Run ``member`` as the partitioned user, with a data directory it can write (tmp_path is root's),
    removed after the block."""
    member.uid = PARTITIONED_UID
    parent = Path(tempfile.mkdtemp(prefix="etcd-partitioned-"))
    try:
        os.chmod(parent, 0o755)
        member.data_dir = parent / member.name
        member.data_dir.mkdir(mode=0o700)
        os.chown(member.data_dir, PARTITIONED_UID, PARTITIONED_UID)
        yield
    finally:
        shutil.rmtree(parent, ignore_errors=True)


class Partition:
    """``with Partition(member):`` the member is cut off from its peers for the block."""

    def __init__(self, member: Member) -> None:
        assert member.uid is not None, "the member must run as a user of its own"
        self.member = member
        client, peer, uid = str(member.client_port), str(member.peer_port), str(member.uid)
        tcp = ["-p", "tcp"]
        sent = ["OUTPUT", "-o", "lo", *tcp, "-m", "owner", "--uid-owner", uid]
        self.rules = [
            [*sent, "-j", "CONNMARK", "--set-mark", MARK],
            [*sent, "!", "--sport", client, "-j", "DROP"],
            # (one rule with two negated ports matched nothing here: iptables-nft 1.8.9)
            ["INPUT", "-i", "lo", *tcp, "--dport", client, "-j", "ACCEPT"],
            ["INPUT", "-i", "lo", *tcp, "--sport", client, "-j", "ACCEPT"],
            ["INPUT", "-i", "lo", *tcp, "-m", "connmark", "--mark", MARK, "-j", "DROP"],
            ["INPUT", "-i", "lo", *tcp, "--dport", peer, "-j", "DROP"],
        ]
        self.added: list[list[str]] = []

    def __enter__(self) -> Partition:
        # Inserted at the top of each chain (in reverse, to keep their order), ahead of any ACCEPT.
        for rule in reversed(self.rules):
            subprocess.run(["iptables", "-w", "-I", rule[0], "1", *rule[1:]], check=True)
            self.added.append(rule)
        self.member.isolated = True
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None
    ) -> None:
        for rule in self.added:
            subprocess.run(["iptables", "-w", "-D", *rule], check=False)
        self.added = []
        self.member.isolated = False
