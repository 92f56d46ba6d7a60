"""The key table on its own: batches in, what the target must hold out (no etcd, threads or disk)."""

from __future__ import annotations

from collections.abc import Mapping

from projector.keytable import KeyTable
from projector.source import Batch
from projector.writer import digest


class Target:
    """What the writer would answer: the files it holds, and which top-level names are not ours."""

    def __init__(self, foreign: tuple[str, ...] = ()) -> None:
        self.foreign = set(foreign)
        self.on_disk: dict[str, bytes] = {}
        self.questions = 0  # is_foreign calls: one per top-level name each time keys are placed

    @property
    def files(self) -> Mapping[str, bytes]:
        return {path: digest(value) for path, value in self.on_disk.items()}

    def is_foreign(self, name: str) -> bool:
        self.questions += 1
        return name in self.foreign

    def read(self, path: str) -> bytes:
        return self.on_disk[path]

    def write(self, table: KeyTable) -> None:
        """What the writer does: make the files what the table wants, reading only what differs."""
        wanted = dict(table.wanted(self))
        self.on_disk = {
            path: self.on_disk[path]
            if path in self.on_disk and digest(self.on_disk[path]) == want
            else table.value(path)
            for path, want in wanted.items()
        }
        table.written()


def test_batches_are_absorbed_in_order_and_deletes_remove() -> None:
    table, target = KeyTable(b"/p/"), Target()
    table.absorb(Batch(5, {b"/p/a": b"1", b"/p/b/c": b"2"}))
    table.absorb(Batch(7, {b"/p/a": b"3", b"/p/b/c": None}))
    assert table.revision == 7
    assert dict(table.wanted(target)) == {"a": digest(b"3")}
    assert table.value("a") == b"3"


def test_a_snapshot_replaces_everything() -> None:
    table, target = KeyTable(b"/p/"), Target()
    table.absorb(Batch(3, {b"/p/gone": b"x", b"/p/kept": b"1"}))
    target.write(table)
    table.absorb(Batch(9, {b"/p/kept": b"1", b"/p/new": b"2"}, snapshot=True))
    assert dict(table.wanted(target)) == {"kept": digest(b"1"), "new": digest(b"2")}
    assert set(table.digests) == {b"/p/kept", b"/p/new"} and table.revision == 9


def test_values_are_held_only_while_not_on_disk() -> None:
    table, target = KeyTable(b"/p/"), Target()
    table.absorb(Batch(2, {b"/p/a": b"1", b"/p/../bad": b"x"}))
    assert table.held == {b"/p/a": b"1", b"/p/../bad": b"x"}
    target.write(table)
    assert table.held == {}  # a is on disk; the bad key can never be, and is not kept
    table.absorb(Batch(3, {b"/p/a": b"2"}))
    assert table.held == {b"/p/a": b"2"}  # until it is written (a failed write is retried with it)
    target.write(table)
    assert table.held == {} and target.on_disk == {"a": b"2"}


def test_keys_are_placed_anew_only_when_keys_come_or_go() -> None:
    table, target = KeyTable(b"/p/"), Target()
    table.absorb(Batch(2, {f"/p/k{n}".encode(): b"v" for n in range(50)}))
    target.write(table)
    placed = target.questions
    assert placed == 50
    table.absorb(Batch(3, {b"/p/k7": b"changed"}))  # a changed value moves nothing
    target.write(table)
    assert target.questions == placed and target.on_disk["k7"] == b"changed"
    table.absorb(Batch(4, {b"/p/k50": b"new"}))  # a new key: every key is placed again
    target.write(table)
    assert target.questions == placed + 51


def test_a_key_displaced_by_a_new_conflict_keeps_its_value_until_projected_again() -> None:
    table, target = KeyTable(b"/p/"), Target()
    table.absorb(Batch(2, {b"/p/a/b": b"below"}))
    target.write(table)
    table.absorb(Batch(3, {b"/p/a": b"file"}))  # the file a wins over a/b
    target.write(table)
    assert target.on_disk == {"a": b"file"} and table.refused == 1
    assert table.held == {b"/p/a/b": b"below"}  # read from disk before it went away
    table.absorb(Batch(4, {b"/p/a": None}))
    target.write(table)
    assert target.on_disk == {"a/b": b"below"} and table.held == {} and table.refused == 0


def test_a_key_over_the_operators_own_file_is_refused_and_held() -> None:
    table, target = KeyTable(b"/p/"), Target(foreign=("notes",))
    table.absorb(Batch(2, {b"/p/notes": b"mine?", b"/p/ok": b"1"}))
    target.write(table)
    assert target.on_disk == {"ok": b"1"} and table.refused == 1
    assert table.held == {b"/p/notes": b"mine?"}


def test_excluded_keys_are_counted_but_never_held_or_refused() -> None:
    from projector.keys import Selection
    from projector.settings.values import parse_glob

    table, target = KeyTable(b"/p/", Selection(exclude=(parse_glob("*-account"),))), Target()
    table.absorb(Batch(2, {b"/p/cert.pem": b"C", b"/p/acme-account": b"secret", b"/p/../bad": b"x"}))
    target.write(table)
    assert target.on_disk == {"cert.pem": b"C"}
    assert table.keys == 3 and table.refused == 1  # the bad key only
    assert b"secret" not in table.held.values() and b"/p/acme-account" not in table.digests
    table.absorb(Batch(3, {b"/p/acme-account": None}))
    assert table.keys == 2
    table.absorb(Batch(4, {b"/p/cert.pem": b"C"}, snapshot=True))
    assert table.keys == 1 and table.excluded == set()
