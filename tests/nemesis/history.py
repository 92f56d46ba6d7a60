"""The nemesis's history: a writer of random transactions whose every outcome is known exactly, readers
of the targets, and the checker of every read against etcd's states.

Each transaction is conditional on a marker key outside the prefix not having changed since the
previous transaction (its mod revision), and sets it to its own number. A timed-out transaction may
still commit later (its proposal waits in a leader's log through a partition), so it is settled by a
fence: the marker put again on the same condition. If the fence commits, the transaction never can;
if it does not, the marker shows the transaction committed, at the marker's revision. No later
transaction can commit between. So the history is a line of states, one per revision that committed,
with no unknown in it.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import os
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyetcd import etcdrpc

PREFIX = "/cfg/"
MARKER = "/nemesis/last"
# Leaves only: no path is a directory of another, so every key is projected and the files are etcd's
# state exactly. Under two prefixes (/cfg/a/ and /cfg/b/), which one dispenser projects as two.
PATHS = ["a/k0", "a/k1", "a/d/k4", "a/d/e/k6", "a/big", "b/k2", "b/k3", "b/d/k5", "b/d/e/k7", "b/x/y/z/k8"]
OUTSIDE = "/elsewhere/untouched"


def fingerprint(files: dict[str, bytes]) -> bytes:
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(path.encode() + b"\0" + hashlib.sha256(files[path]).digest())
    return digest.digest()


@dataclass
class History:
    """The states etcd went through, in order: (revision, commit time, fingerprint)."""

    states: list[tuple[int, float, bytes]] = field(default_factory=list)
    current: dict[str, bytes] = field(default_factory=dict)
    files: list[dict[str, bytes]] = field(default_factory=list)  # each state's files (values shared)
    transactions: int = 0
    unknown: int = 0  # resolved through the marker

    def committed(self, revision: int, at: float, changes: dict[str, bytes | None]) -> None:
        for path, value in changes.items():
            if value is None:
                self.current.pop(path, None)
            else:
                self.current[path] = value
        self.states.append((revision, at, fingerprint(self.current)))
        self.files.append(dict(self.current))
        self.transactions += 1

    def nearest(self, files: dict[str, bytes], at: float) -> str:
        """How a read that is none of etcd's states differs from the nearest one committed within a
        second of ``at`` (the fewest paths apart), and which state each differing value read is from."""
        around = [p for p, (_r, committed, _f) in enumerate(self.states) if abs(committed - at) <= 1]
        if not around:
            return "no state committed within a second of the read"

        def apart(position: int) -> set[str]:
            state = self.files[position]
            return {path for path in state.keys() | files.keys() if state.get(path) != files.get(path)}

        best = min(around, key=lambda position: len(apart(position)))
        lines = [f"nearest: state {best} (revision {self.states[best][0]}), apart in:"]
        order = [*range(best, -1, -1), *range(best + 1, len(self.files))]  # back first, then on
        for path in sorted(apart(best)):
            value = files.get(path)
            was = next((p for p in order if self.files[p].get(path) == value), None)
            source = "no state" if was is None else f"state {was} (revision {self.states[was][0]})"
            read = "absent" if value is None else f"{len(value)} bytes"
            lines.append(f"  {path}: read {read}, as in {source}")
        return "\n".join(lines)

    def index(self) -> dict[bytes, list[int]]:
        """Fingerprint -> the positions in ``states`` where etcd held it."""
        found: dict[bytes, list[int]] = {}
        for position, (_revision, _at, state) in enumerate(self.states):
            found.setdefault(state, []).append(position)
        return found


class Writer:
    """Random transactions on the prefix, one at a time, each outcome known (see the module's text)."""

    def __init__(self, etcd: Any, seed: int) -> None:
        self.etcd = etcd
        self.random = random.Random(seed)
        self.history = History()
        self.number = 0
        self.marker_revision = 0  # the marker's mod revision: every transaction is conditional on it
        self.stopping = threading.Event()
        self.failure: BaseException | None = None  # the writer stopped: the rest of the run is void
        self._client: Any = None  # kept: with authentication on, each new client costs a bcrypt

    def start_state(self) -> None:
        with self.etcd.client() as client:
            ops = [client.transactions.put(MARKER, "0")] + [
                client.transactions.delete(PREFIX + p) for p in PATHS
            ]
            _succeeded, _responses = client.transaction(compare=[], success=ops, failure=[])
            self.marker_revision = int(client.get_response(MARKER).kvs[0].mod_revision)
        self.history.committed(self.marker_revision, time.time(), {})

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                self.step()
                self.stopping.wait(self.random.uniform(0.0, 0.05))
        except BaseException as error:
            self.failure = error
            self.stopping.set()

    def _changes(self) -> dict[str, bytes | None]:
        if self.random.random() < 0.1:
            return {}  # touches nothing projected: only the marker (and a key outside the prefix)
        changes: dict[str, bytes | None] = {}
        for path in self.random.sample(PATHS, self.random.randint(1, 4)):
            if self.random.random() < 0.25:
                changes[path] = None
            else:
                size = self.random.choice([0, 1, 10, 100, 1000, 300_000 if path.endswith("big") else 2000])
                changes[path] = (
                    self.random.randbytes(size // 2 + 1).hex()[:size].encode()
                )  # (text: the children record text)
        return changes

    def step(self) -> None:
        changes = self._changes()
        number = self.number + 1
        ops = [
            etcdrpc.RequestOp(request_put=etcdrpc.PutRequest(key=MARKER.encode(), value=str(number).encode()))
        ]
        if not changes:
            ops.append(
                etcdrpc.RequestOp(
                    request_put=etcdrpc.PutRequest(key=OUTSIDE.encode(), value=str(number).encode())
                )
            )
        for path, value in changes.items():
            key = (PREFIX + path).encode()
            if value is None:
                ops.append(etcdrpc.RequestOp(request_delete_range=etcdrpc.DeleteRangeRequest(key=key)))
            else:
                ops.append(etcdrpc.RequestOp(request_put=etcdrpc.PutRequest(key=key, value=value)))
        request = etcdrpc.TxnRequest(compare=[self._unmoved()], success=ops)
        revision = None
        try:
            if self._client is None:
                self._client = self.etcd.client()
            response = self._client.kvstub.Txn(request, 2.0, metadata=self._client.metadata)
            if not response.succeeded:
                raise AssertionError(f"transaction {number}: the marker moved under the writer")
            revision = self.marker_revision = int(response.header.revision)
        except AssertionError:
            raise
        except Exception:
            self.close()
            revision = self._resolve(number)
        if revision is not None:
            self.number = number
            self.history.committed(revision, time.time(), changes)

    def _unmoved(self) -> etcdrpc.Compare:
        return etcdrpc.Compare(
            key=MARKER.encode(),
            result=etcdrpc.Compare.EQUAL,
            target=etcdrpc.Compare.MOD,
            mod_revision=self.marker_revision,
        )

    def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None

    def _resolve(self, number: int) -> int | None:
        """An outcome the client did not see, settled for good by a fence (the module's text); retried
        until a member answers. The revision the transaction committed at, or None."""
        self.history.unknown += 1
        fence = etcdrpc.TxnRequest(
            compare=[self._unmoved()],
            success=[
                etcdrpc.RequestOp(
                    request_put=etcdrpc.PutRequest(key=MARKER.encode(), value=str(self.number).encode())
                )
            ],
            failure=[etcdrpc.RequestOp(request_range=etcdrpc.RangeRequest(key=MARKER.encode()))],
        )
        while True:
            try:
                with self.etcd.client() as client:
                    response = client.kvstub.Txn(fence, 2.0, metadata=client.metadata)
                break
            except Exception:
                time.sleep(0.2)
        if response.succeeded:  # fenced: the transaction is dead
            self.marker_revision = int(response.header.revision)
            return None
        marker = response.responses[0].response_range.kvs[0]  # moved: by the transaction, or a fence
        self.marker_revision = int(marker.mod_revision)  # that timed out but committed
        return self.marker_revision if marker.value == str(number).encode() else None


@dataclass
class Read:
    at: float  # just before ``..data`` was resolved
    until: float  # just after: the read took its generation somewhere in between
    fingerprint: bytes
    who: str  # which dispenser's target, and which reader


def read_target(target: Path) -> tuple[float, float, dict[str, bytes]] | None:
    """``..data`` resolved once (the times just before and after), the whole generation it names read;
    None if there is none yet, or a file of it went away while it was read (slower than the grace)."""
    at = time.time()
    try:
        root = target / os.readlink(target / "..data")
        until = time.time()
        files = {}
        for directory, _dirs, names in os.walk(root, onerror=_gone):
            for name in names:
                path = Path(directory) / name
                files[str(path.relative_to(root))] = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return at, until, files


def _gone(error: OSError) -> None:
    """os.walk would skip a directory it cannot list: a generation that went away mid-read is no read."""
    raise error


class Readers:
    """Threads reading each target many times a second."""

    def __init__(self, targets: dict[str, Path], per_target: int = 2) -> None:
        self.targets = targets
        self.reads: list[Read] = []
        self.vanished = 0
        self.stopping = threading.Event()
        self.threads = [
            threading.Thread(target=self._read, args=(name, path, f"{name}/reader{n}"), daemon=True)
            for name, path in targets.items()
            for n in range(per_target)
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join()

    def _read(self, name: str, target: Path, who: str) -> None:
        while not self.stopping.is_set():
            if (target / "..data").is_symlink():
                got = read_target(target)
                if got is None:
                    self.vanished += 1
                else:
                    self.reads.append(Read(got[0], got[1], fingerprint(got[2]), who))
            self.stopping.wait(0.02)


@dataclass
class Anomaly:
    who: str
    what: str
    at: float | None = None  # when the read that shows it was made
    detail: str = ""  # how the read differs from etcd's nearest state, where the read's files are known


def check_records(history: History, who: str, records: list[dict[str, Any]]) -> list[Anomaly]:
    """A child's reads on its signals: each one of etcd's states, never going back within one child."""
    index = history.index()
    anomalies = []
    floor: dict[int, int] = {}
    for record in records:
        if record["files"] is None:  # its generation went away while it was read: no read
            continue
        files = {path: text.encode() for path, text in record["files"].items()}
        positions = index.get(fingerprint(files))
        low = floor.get(record["pid"], 0)
        later = [p for p in positions or () if p >= low]
        if not later:
            what = "is none of etcd's states" if not positions else "went back"
            reader = f"{who}/child {record['pid']}"
            detail = history.nearest(files, record["at"])
            anomalies.append(Anomaly(reader, f"a read on {record['event']} {what}", record["at"], detail))
            continue
        floor[record["pid"]] = later[0]
    return anomalies


def check(history: History, reads: list[Read]) -> tuple[list[Anomaly], dict[str, list[tuple[float, int]]]]:
    """Every read is one of etcd's states, and for each dispenser (every reader of its target) no read
    holds an older state than a read that resolved ``..data`` wholly before it did (two reads whose
    resolutions overlap may come in either order). Also: for each dispenser, (read time, the position
    of the newest state the read can be)."""
    index = history.index()
    anomalies: list[Anomaly] = []
    seen: dict[str, list[tuple[float, int]]] = {}
    floor: dict[str, int] = {}  # the state every later read must reach, per dispenser
    earlier: dict[str, list[tuple[float, int]]] = {}  # reads not yet wholly before: (until, lowest state)
    for read in sorted(reads, key=lambda r: r.at):
        dispenser = read.who.split("/")[0]
        pending = earlier.setdefault(dispenser, [])
        while pending and pending[0][0] < read.at:  # wholly before this one: it binds
            floor[dispenser] = max(floor.get(dispenser, 0), heapq.heappop(pending)[1])
        positions = index.get(read.fingerprint)
        if not positions:
            anomalies.append(Anomaly(read.who, f"a read at {read.at:.3f} is none of etcd's states", read.at))
            continue
        low = floor.get(dispenser, 0)
        later = [p for p in positions if p >= low]
        if not later:
            anomalies.append(
                Anomaly(
                    read.who,
                    f"a read at {read.at:.3f} went back to state {positions[-1]} after {low}",
                    read.at,
                )
            )
            continue
        heapq.heappush(pending, (read.until, later[0]))
        seen.setdefault(dispenser, []).append((read.at, later[-1]))
    return anomalies, seen


def staleness(history: History, seen: list[tuple[float, int]]) -> list[tuple[float, float]]:
    """For each state etcd committed: (commit time, seconds until the first read holding it or a later
    one); states never read before the next replaced them count until that first later read."""
    result = []
    reads = sorted(seen)
    cursor = 0
    for position, (_revision, at, _state) in enumerate(history.states):
        while cursor < len(reads) and (reads[cursor][0] < at or reads[cursor][1] < position):
            cursor += 1
        if cursor < len(reads):
            result.append((at, reads[cursor][0] - at))
    return result
