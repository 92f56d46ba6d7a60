"""The key table on its own: batches in, what the target must hold out (no etcd, threads or disk)."""

from __future__ import annotations

import pytest

from projector.batches import Batch
from projector.digests import digest
from projector.keytable import KeyTable
from projector.mount import Mount


class Target:
    """What the writer would answer: the files it holds, and which top-level names are not ours."""

    def __init__(self, foreign: tuple[str, ...] = ()) -> None:
        self.foreign = set(foreign)
        self.on_disk: dict[str, bytes] = {}
        self.questions = 0  # is_foreign calls and passes over the target's names

    def is_foreign(self, name: str) -> bool:
        self.questions += 1
        return name in self.foreign

    def foreign_names(self) -> set[str]:
        self.questions += 1
        return set(self.foreign)

    def read(self, path: str) -> bytes:
        return self.on_disk[path]

    def write(self, table: KeyTable) -> None:
        """What the projection does: make the table's plan, write it, commit it."""
        plan = table.plan(self)
        for path, new in plan.changes.items():
            if new is None:
                self.on_disk.pop(path, None)
            else:
                value = plan.contents[path]
                assert digest(value) == new
                self.on_disk[path] = value
        table.commit(plan)


def test_batches_are_absorbed_in_order_and_deletes_remove() -> None:
    target = Target()
    table = KeyTable(Mount(b"/p/"))
    table.absorb(Batch(5, {b"/p/a": b"1", b"/p/b/c": b"2"}), target)
    table.absorb(Batch(7, {b"/p/a": b"3", b"/p/b/c": None}), target)
    assert table.revision == 7
    assert dict(table.plan(target).changes) == {"a": digest(b"3"), "b/c": None}
    assert table.plan(target).contents["a"] == b"3"


def test_a_snapshot_replaces_everything() -> None:
    target = Target()
    table = KeyTable(Mount(b"/p/"))
    table.absorb(Batch(3, {b"/p/gone": b"x", b"/p/kept": b"1"}), target)
    target.write(table)
    table.absorb(Batch(9, {b"/p/kept": b"1", b"/p/new": b"2"}, snapshot=True), target)
    assert dict(table.plan(target).changes) == {"gone": None, "new": digest(b"2")}  # kept is on disk as it is
    assert set(table.digests) == {"kept", "new"} and table.revision == 9


def test_values_are_held_only_while_not_on_disk() -> None:
    target = Target()
    table = KeyTable(Mount(b"/p/"))
    table.absorb(Batch(2, {b"/p/a": b"1", b"/p/../bad": b"x"}), target)
    assert table.held == {"a": b"1"}  # the bad key can never be on disk: its value is not kept
    target.write(table)
    assert table.held == {}  # a is on disk
    table.absorb(Batch(3, {b"/p/a": b"2"}), target)
    assert table.held == {"a": b"2"}  # until it is written (a failed write is retried with it)
    target.write(table)
    assert table.held == {} and target.on_disk == {"a": b"2"}


def test_keys_are_placed_as_they_come_without_a_pass_over_the_others() -> None:
    target = Target()
    table = KeyTable(Mount(b"/p/"))
    table.absorb(Batch(2, {f"/p/k{n}".encode(): b"v" for n in range(50)}, snapshot=True), target)
    target.write(table)
    assert target.questions == 1  # a snapshot reads the target's names once
    table.absorb(Batch(3, {b"/p/k7": b"changed"}), target)  # a changed value moves nothing
    target.write(table)
    assert target.questions == 1 and target.on_disk["k7"] == b"changed"
    table.absorb(Batch(4, {b"/p/k50": b"new"}), target)  # a new key: that key is placed
    assert dict(table.plan(target).changes) == {"k50": digest(b"new")}
    target.write(table)
    assert target.questions == 2 and len(target.on_disk) == 51


def test_a_key_displaced_by_a_new_conflict_keeps_its_value_until_projected_again() -> None:
    target = Target()
    table = KeyTable(Mount(b"/p/"))
    table.absorb(Batch(2, {b"/p/a/b": b"below"}), target)
    target.write(table)
    table.absorb(Batch(3, {b"/p/a": b"file"}), target)  # the file a wins over a/b
    target.write(table)
    assert target.on_disk == {"a": b"file"} and table.refused == 1
    assert table.held == {"a/b": b"below"}  # read from disk before it went away
    table.absorb(Batch(4, {b"/p/a": None}), target)
    target.write(table)
    assert target.on_disk == {"a/b": b"below"} and table.held == {} and table.refused == 0


def test_a_key_over_the_operators_own_file_is_refused_and_held() -> None:
    target = Target(foreign=("notes",))
    table = KeyTable(Mount(b"/p/"))
    table.absorb(Batch(2, {b"/p/notes": b"mine?", b"/p/ok": b"1"}), target)
    target.write(table)
    assert target.on_disk == {"ok": b"1"} and table.refused == 1
    assert table.held == {"notes": b"mine?"}


def test_excluded_keys_are_counted_but_never_held_or_refused() -> None:
    from projector.keys import Selection
    from projector.settings.values import parse_glob

    target = Target()
    table = KeyTable(Mount(b"/p/"), Selection(exclude=(parse_glob("*-account"),)))
    table.absorb(Batch(2, {b"/p/cert.pem": b"C", b"/p/acme-account": b"secret", b"/p/../bad": b"x"}), target)
    target.write(table)
    assert target.on_disk == {"cert.pem": b"C"}
    assert table.count == 3 and table.refused == 1  # the bad key only
    assert b"secret" not in table.held.values() and "acme-account" not in table.digests
    table.absorb(Batch(3, {b"/p/acme-account": None}), target)
    assert table.count == 2
    table.absorb(Batch(4, {b"/p/cert.pem": b"C"}, snapshot=True), target)
    assert table.count == 1 and not table.excluded.ranks


def projected(table: KeyTable, target: Target, *batches: dict[bytes, bytes | None]) -> dict[str, bytes]:
    """What is on disk after the batches, one after the other."""
    for revision, changes in enumerate(batches, start=2):
        table.absorb(Batch(revision, changes), target)
        target.write(table)
    return target.on_disk


def test_a_file_wins_over_keys_below_it_whatever_the_order() -> None:
    for order in ([b"/p/a", b"/p/a/b", b"/p/a/c/d"], [b"/p/a/c/d", b"/p/a/b", b"/p/a"]):
        target = Target()
        table = KeyTable(Mount(b"/p/"))
        assert projected(table, target, *({key: key[-1:]} for key in order)) == {"a": b"a"}
        assert table.refused == 2


def test_the_same_in_one_batch_and_in_a_snapshot() -> None:
    keys: dict[bytes, bytes | None] = {b"/p/a/c/d": b"d", b"/p/a/b": b"b", b"/p/a": b"a"}
    target = Target()
    table = KeyTable(Mount(b"/p/"))
    assert projected(table, target, keys) == {"a": b"a"}
    table.absorb(Batch(9, {b"/p/a/b": b"b", b"/p/a/c/d": b"d"}, snapshot=True), target)  # a is gone
    target.write(table)
    assert target.on_disk == {"a/b": b"b", "a/c/d": b"d"} and table.refused == 0


def test_siblings_and_directories_coexist() -> None:
    target = Target()
    table = KeyTable(Mount(b"/p/"))
    found = projected(table, target, {b"/p/a/b": b"1", b"/p/a/c": b"2", b"/p/ab": b"3"})
    assert found == {"a/b": b"1", "a/c": b"2", "ab": b"3"} and table.refused == 0


def test_a_key_freed_from_the_operators_file_when_keys_come_or_go() -> None:
    target = Target(foreign=("mine",))
    table = KeyTable(Mount(b"/p/"))
    assert projected(table, target, {b"/p/mine/x": b"1", b"/p/ok": b"2"}) == {"ok": b"2"}
    target.foreign.clear()  # the operator removes their file
    assert projected(table, target, {b"/p/ok": b"3"}) == {"ok": b"3"}  # a changed value moves nothing
    assert projected(table, target, {b"/p/new": b"4"}) == {"ok": b"3", "new": b"4", "mine/x": b"1"}


def test_a_refused_key_warns_once_and_again_only_for_another_reason(caplog: pytest.LogCaptureFixture) -> None:
    target = Target(foreign=("a",))
    table = KeyTable(Mount(b"/p/"))
    projected(table, target, {b"/p/a/x": b"1"}, {b"/p/a/x": b"2"}, {b"/p/a": b"f"})
    warnings = [r.getMessage() for r in caplog.records if "refusing key" in r.getMessage()]
    assert len(warnings) == 3, warnings  # a/x: the operator's a; a: the same; a/x: below the file a


def test_a_displaced_key_changed_before_the_plan_keeps_its_new_value() -> None:
    # Two batches taken in before one plan (as --wait does): the value on disk is not the key's any more.
    target = Target()
    table = KeyTable(Mount(b"/p/"))
    projected(table, target, {b"/p/a/b": b"old"})
    table.absorb(Batch(3, {b"/p/a": b"file"}), target)  # a/b is displaced: on disk only
    table.absorb(Batch(4, {b"/p/a/b": b"new"}), target)  # and changed before anything is written
    target.write(table)
    assert table.held == {"a/b": b"new"}
    assert projected(table, target, {b"/p/a": None}) == {"a/b": b"new"}


def test_decoded_values_and_one_that_does_not_decode_keeps_the_last_good_file() -> None:
    from projector.decoding import Decoding
    from projector.settings.values import parse_glob

    target = Target()
    table = KeyTable(Mount(b"/p/"), decoding=Decoding(((parse_glob("*.der"), "base64"),)))
    found = projected(table, target, {b"/p/a.der": b"AAEC", b"/p/b.der": b"!", b"/p/plain": b"AAEC"})
    assert found == {"a.der": b"\x00\x01\x02", "plain": b"AAEC"}
    assert table.count == 3 and table.refused == 1
    assert projected(table, target, {b"/p/a.der": b"not base64"}) == found  # the last good content stays
    assert table.refused == 2 and "a.der" in table.undecodable
    assert projected(table, target, {b"/p/a.der": b"AwQ=", b"/p/b.der": None})["a.der"] == b"\x03\x04"
    assert table.count == 2 and table.refused == 0 and table.undecodable == {}


def test_items_project_only_the_chosen_keys_at_their_paths(caplog: pytest.LogCaptureFixture) -> None:
    target = Target()
    table = KeyTable(Mount(b"/p/", ((b"tls.crt", "cert.pem"), (b"tls.key", "private/key.pem"))))
    keys = {b"/p/tls.crt": b"C", b"/p/other": b"O", b"/p/../hostile": b"H", b"/p/cert.pem": b"not this"}
    assert projected(table, target, keys) == {"cert.pem": b"C"}  # tls.key is missing: simply absent
    assert table.count == 4 and table.refused == 0 and "refusing" not in caplog.text
    assert projected(table, target, {b"/p/tls.key": b"K", b"/p/other": None})["private/key.pem"] == b"K"
    assert table.count == 4
    table.absorb(Batch(9, {b"/p/tls.key": b"K"}, snapshot=True), target)
    target.write(table)
    assert target.on_disk == {"private/key.pem": b"K"} and table.count == 1


def two_mounts() -> tuple[Mount, Mount]:
    return Mount(b"/a/"), Mount(b"/b/")


def test_two_prefixes_on_one_path_the_first_given_wins_whatever_the_order(
    caplog: pytest.LogCaptureFixture,
) -> None:
    for order in ([b"/a/x", b"/b/x"], [b"/b/x", b"/a/x"]):
        target = Target()
        table = KeyTable(two_mounts())
        assert projected(table, target, *({key: key[1:2]} for key in order)) == {"x": b"a"}
        assert table.count == 2 and table.refused == 1
    assert "'/b/x': '/a/x' lands on the same path 'x', and the first --prefix given wins" in caplog.text
    assert projected(table, target, {b"/a/x": None}) == {"x": b"b"}  # the next in rank takes it
    assert table.count == 1 and table.refused == 0
    assert projected(table, target, {b"/a/x": b"a2"}) == {"x": b"a2"}  # and gives it back
    assert projected(table, target, {b"/b/x": b"b2"}, {b"/a/x": None}) == {"x": b"b2"}


def test_a_snapshot_without_the_winner_hands_its_path_on() -> None:
    target = Target()
    table = KeyTable((Mount(b"/a/"), Mount(b"/b/", directory="d")))
    projected(table, target, {b"/a/d/x": b"a", b"/b/x": b"b", b"/b/y": b"y"})
    assert target.on_disk == {"d/x": b"a", "d/y": b"y"} and table.count == 3
    table.absorb(Batch(9, {b"/b/x": b"b", b"/b/y": b"y"}, snapshot=True), target)
    target.write(table)
    assert target.on_disk == {"d/x": b"b", "d/y": b"y"} and table.count == 2 and table.refused == 0
