"""The nemesis's faults: one at a time, on a schedule drawn from a seed, each healed before the next."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from etcd_auth import ALICE_PASSWORD, READ_CFG
from etcd_server import EtcdCluster, GrpcProxy
from harness import Run
from partition import Partition
from pyetcd import etcdrpc

FAULTS = (
    "kill member",
    "freeze member",
    "partition member",
    "compact",
    "kill proxy",
    "kill dispenser",
    "fill disk",
    "expire token",
    "revoke role",
)
FILLER = "filler"  # beside the target, on its file system: the only entry there that is not the target


class Nemesis:
    """Faults on ``cluster`` (member 0 can be partitioned), ``proxy`` and the ``dispensers``; ``restart``
    starts a dispenser again as its supervisor would. ``log``: (start, end, kind) of each fault."""

    def __init__(
        self,
        cluster: EtcdCluster,
        proxy: GrpcProxy,
        dispensers: dict[str, Run],
        restart: Callable[[str], None],
        seed: int,
    ) -> None:
        self.cluster, self.proxy, self.dispensers, self.restart = cluster, proxy, dispensers, restart
        self.random = random.Random(seed)
        self.log: list[tuple[float, float, str]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(self.random.uniform(0.5, 2.0)):
            kind = self.random.choice(FAULTS)
            began = time.time()
            getattr(self, "_" + kind.replace(" ", "_"))()
            self.log.append((began, time.time(), kind))

    def _hold(self) -> None:
        self.stopping.wait(self.random.uniform(1.0, 4.0))

    def _member(self) -> Any:
        return self.random.choice(self.cluster.members)

    def _kill_member(self) -> None:
        member = self._member()
        member.kill()
        self._hold()
        member.launch()

    def _freeze_member(self) -> None:
        member = self._member()
        member.freeze()
        self._hold()
        member.thaw()

    def _partition_member(self) -> None:
        with Partition(self.cluster.members[0]):
            self._hold()

    def _compact(self) -> None:
        try:
            with self.cluster.client() as client:
                revision = int(client.get_response("/").header.revision)
                client.compact(revision, physical=False)
        except Exception:
            pass  # no leader this moment: a compaction that did not happen is no fault

    def _kill_proxy(self) -> None:
        self.proxy.kill()
        self._hold()
        self.proxy.start()

    def _fill_disk(self) -> None:
        """The file system of a target full (a small tmpfs), then freed."""
        filler = self.dispensers[self.random.choice(sorted(self.dispensers))].target.parent / FILLER
        descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with contextlib.suppress(OSError):  # (ENOSPC: full)
                while os.write(descriptor, bytes(1 << 20)):
                    pass
        finally:
            os.close(descriptor)
        self._hold()
        filler.unlink()

    def _expire_token(self) -> None:
        """Every token of the dispensers' user invalid at once: a password change (to the same one)
        ends them, as a token's TTL would."""
        self._auth(
            "UserChangePassword", etcdrpc.AuthUserChangePasswordRequest(name="alice", password=ALICE_PASSWORD)
        )

    def _revoke_role(self) -> None:
        """The dispensers' role may no longer read the prefix; then it may again."""
        revoke = etcdrpc.AuthRoleRevokePermissionRequest(role="reader", key=b"/cfg/", range_end=b"/cfg0")
        self._auth("RoleRevokePermission", revoke)
        self._hold()
        self._auth(
            "RoleGrantPermission", etcdrpc.AuthRoleGrantPermissionRequest(name="reader", perm=READ_CFG)
        )

    def _auth(self, method: str, request: Any) -> None:
        """One change of etcd's users and roles, retried until a leader takes it."""
        while True:
            try:
                with self.cluster.client() as client:
                    call = getattr(etcdrpc.AuthStub(client.channel), method)
                    call(request, 5.0, metadata=client.metadata)
                return
            except Exception as exc:
                if "not granted" in str(exc):  # (a revocation that went through before its answer was lost)
                    return
                time.sleep(0.2)

    def _kill_dispenser(self) -> None:
        name = self.random.choice(sorted(self.dispensers))
        process = self.dispensers[name].process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait()
        self.stopping.wait(self.random.uniform(0.1, 1.0))  # a supervisor's restart delay
        self.restart(name)
