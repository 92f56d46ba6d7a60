"""The nemesis's faults: one at a time, on a schedule drawn from a seed, each healed before the next."""

from __future__ import annotations

import random
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from etcd_server import EtcdCluster, GrpcProxy
from harness import Run
from partition import Partition

FAULTS = ("kill member", "freeze member", "partition member", "compact", "kill proxy", "kill dispenser")


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

    def _kill_dispenser(self) -> None:
        name = self.random.choice(sorted(self.dispensers))
        process = self.dispensers[name].process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait()
        self.stopping.wait(self.random.uniform(0.1, 1.0))  # a supervisor's restart delay
        self.restart(name)
