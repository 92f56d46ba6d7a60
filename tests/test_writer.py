"""The generation writer on a temporary directory (no etcd involved: it only writes files)."""

from __future__ import annotations

import os
import random
import stat
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from harness import all_generations as generations

from projector.digests import digest
from projector.settings import Ownership
from projector.writer import DATA_LINK, MAX_STALE, Rejected, WriteError, Writer, links


def hold(writer: Writer, values: dict[str, bytes]) -> bool:
    """Make the target hold exactly ``values``: as changes, every path with its digest, and the paths
    that are live but not in ``values`` removed."""
    changes: dict[str, bytes | None] = {path: digest(value) for path, value in values.items()}
    changes.update((path, None) for path in writer.files if path not in values)
    return writer.apply(changes, values.__getitem__)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def opened(target: Path, **kwargs: object) -> Writer:
    writer = Writer(target, Ownership(), **kwargs)  # type: ignore[arg-type]
    writer.open()
    return writer


def test_apply_swaps_a_whole_generation_and_links_names(tmp_path: Path) -> None:
    writer = opened(tmp_path / "t")
    assert hold(writer, {"a": b"1", "d/e/f": b"2"})
    target = tmp_path / "t"
    assert os.readlink(target / DATA_LINK) == writer.generation
    assert (target / "a").read_bytes() == b"1" and (target / "d" / "e" / "f").read_bytes() == b"2"
    assert stat.S_IMODE(os.stat(target / "a").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(target / "d" / "e").st_mode) == 0o700


def test_no_change_writes_nothing(tmp_path: Path) -> None:
    writer = opened(tmp_path / "t")
    assert hold(writer, {"a": b"1"})
    live = writer.generation
    assert not hold(writer, {"a": b"1"})
    assert writer.generation == live


def test_unchanged_files_are_hard_linked(tmp_path: Path) -> None:
    writer = opened(tmp_path / "t")
    target = tmp_path / "t"
    hold(writer, {"same": b"x", "other": b"1"})
    before = os.stat(target / "same").st_ino

    def only_changed(path: str) -> bytes:
        assert path == "other", "an unchanged file was rewritten"
        return b"2"

    writer.apply({"same": digest(b"x"), "other": digest(b"2")}, only_changed)
    assert os.stat(target / "same").st_ino == before


def test_removed_names_lose_their_links_and_foreign_files_stay(tmp_path: Path) -> None:
    target = tmp_path / "t"
    target.mkdir()
    (target / "mine").write_text("operator")
    writer = opened(target)
    assert writer.is_foreign("mine") and not writer.is_foreign("new")
    hold(writer, {"a": b"1", "b": b"2"})
    assert not writer.is_foreign("a")
    hold(writer, {"b": b"2"})
    assert not os.path.lexists(target / "a")
    assert (target / "mine").read_text() == "operator"


def test_a_failed_write_leaves_the_live_generation_and_no_partial_one(tmp_path: Path) -> None:
    writer = opened(tmp_path / "t")
    hold(writer, {"a": b"1"})
    live = writer.generation

    def failing(path: str) -> bytes:
        if path == "z":
            raise OSError(28, "No space left on device", path)
        return b"new"

    with pytest.raises(WriteError, match="No space left"):
        writer.apply({"a": digest(b"new"), "z": digest(b"zz")}, failing)
    assert writer.generation == live and generations(tmp_path / "t") == [live]
    assert (tmp_path / "t" / "a").read_bytes() == b"1"
    assert not os.path.lexists(tmp_path / "t" / "z")


@pytest.mark.parametrize("outcome", ["write fails", "check refuses", "a name is taken meanwhile"])
def test_a_candidate_that_does_not_go_live_leaves_no_links(tmp_path: Path, outcome: str) -> None:
    # Enough new names that their links are made on a thread while the files are written.
    target = tmp_path / "t"
    writer = opened(target)
    hold(writer, {"kept": b"1"})
    live = writer.generation
    names = [f"n{i}" for i in range(links.ALONGSIDE + 1)]
    if outcome == "a name is taken meanwhile":  # by the operator, after the key table looked
        (target / "n500").write_text("operator")

    def content(path: str) -> bytes:
        if outcome == "write fails" and path == names[-1]:
            raise OSError(28, "No space left on device", path)
        return b"v"

    changes = {name: digest(b"v") for name in names}
    if outcome == "check refuses":
        with pytest.raises(Rejected):
            writer.apply(changes, content, accept=lambda candidate: len(os.listdir(candidate)) < 0)
    else:
        with pytest.raises(WriteError, match=r"No space left|File exists"):
            writer.apply(changes, content)
    assert writer.generation == live and generations(target) == [live]
    left = {DATA_LINK, str(live), "kept"} | ({"n500"} if outcome == "a name is taken meanwhile" else set())
    assert set(os.listdir(target)) == left
    assert hold(writer, {"kept": b"1", "n0": b"v"})  # and the next change works
    assert (target / "n0").read_bytes() == b"v" and not os.path.lexists(target / "n1")


def test_replaced_generations_are_kept_for_reuse_and_no_more(tmp_path: Path) -> None:
    clock, target = Clock(), tmp_path / "t"
    writer = opened(target, grace=5.0, clock=clock)
    for n in range(MAX_STALE + 3):
        clock.now += 0.1
        hold(writer, {"a": str(n).encode()})
        writer.collect_garbage()  # the dispenser runs it when idle
    assert len(generations(target)) == MAX_STALE + 1
    clock.now += 5.0
    writer.collect_garbage()
    kept = {os.stat(target / name).st_ino for name in generations(target)}
    assert len(kept) == MAX_STALE + 1  # after the grace too: the material of the next changes
    hold(writer, {"a": b"next"})
    assert os.stat(target / str(writer.generation)).st_ino in kept  # an old one, brought up to date
    assert tree(target / DATA_LINK) == {"a": b"next"} and len(generations(target)) == MAX_STALE + 1
    writer.collect_garbage(everything=True)
    assert generations(target) == [writer.generation]


def test_after_the_grace_no_replaced_generation_holds_what_changed_or_went(tmp_path: Path) -> None:
    clock, target = Clock(), tmp_path / "t"
    writer = opened(target, grace=5.0, clock=clock)
    hold(writer, {"key.pem": b"old secret", "gone/x": b"revoked", "same": b"s"})
    clock.now += 0.1
    hold(writer, {"key.pem": b"new secret", "same": b"s"})
    writer.collect_garbage()
    old = {name: tree(target / name) for name in generations(target) if name != writer.generation}
    assert list(old.values()) == [{"key.pem": b"old secret", "gone/x": b"revoked", "same": b"s"}]
    assert writer.has_garbage  # still to be brought up to date, after the grace
    clock.now += 5.0
    writer.collect_garbage()
    assert not writer.has_garbage
    for name in generations(target):
        assert tree(target / name) == {"key.pem": b"new secret", "same": b"s"}, name
    assert len(generations(target)) == 2  # the replaced one kept, renamed (readers of its old name fail)
    assert not set(old) & set(generations(target))
    hold(writer, {"key.pem": b"newer", "same": b"s"})
    assert tree(target / DATA_LINK) == {"key.pem": b"newer", "same": b"s"}


def test_open_cleans_leftovers_and_indexes_by_content(tmp_path: Path) -> None:
    target = tmp_path / "t"
    first = opened(target)
    hold(first, {"a": b"1", "d/b": b"2"})
    (target / "..data_tmp.deadbeef").symlink_to("nowhere")
    (target / "..2000_01_01_00_00_00.000000000").mkdir()
    # a torn file, as after a power loss
    (target / first.generation / "a").write_bytes(b"")  # type: ignore[operator]
    second = opened(target)
    assert generations(target) == [first.generation]
    assert not os.path.lexists(target / "..data_tmp.deadbeef")
    assert second.files["d/b"] == digest(b"2")
    assert hold(second, {"a": b"1", "d/b": b"2"})
    assert (target / "a").read_bytes() == b"1"
    third = opened(target)
    assert not hold(third, {"a": b"1", "d/b": b"2"})


def test_a_mode_change_rewrites(tmp_path: Path) -> None:
    target = tmp_path / "t"
    hold(opened(target), {"a": b"1"})
    writer = Writer(target, Ownership(mode=0o644))
    writer.open()
    assert hold(writer, {"a": b"1"})
    assert stat.S_IMODE(os.stat(target / "a").st_mode) == 0o644


def test_a_data_link_pointing_elsewhere_is_replaced_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "t"
    target.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep")
    (target / DATA_LINK).symlink_to(outside)
    writer = opened(target)
    hold(writer, {"a": b"1"})
    assert (outside / "precious").read_text() == "keep"
    assert os.readlink(target / DATA_LINK) == writer.generation


def test_mode_and_owner_are_set_before_the_first_byte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uid, gid = (65534, 65534) if os.geteuid() == 0 else (os.getuid(), os.getgid())
    writer = Writer(tmp_path / "t", Ownership(mode=0o640, uid=uid, gid=gid))
    writer.open()
    real_write, seen = os.write, []

    def checking_write(fd: int, data: bytes) -> int:
        st = os.fstat(fd)
        seen.append((stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", checking_write)
    hold(writer, {"a": b"1", "d/b": b"2"})
    writer.prepare()  # now through blank files made ahead
    hold(writer, {"a": b"3", "d/b": b"4"})
    monkeypatch.undo()
    assert seen == [(0o640, uid, gid)] * 4
    assert stat.S_IMODE(os.stat(tmp_path / "t" / "d").st_mode) == 0o750
    assert os.stat(tmp_path / "t" / "d").st_uid == uid


def tree(root: Path) -> dict[str, bytes]:
    """Every entry below ``root`` (which must be files and directories only) -> file content."""
    found = {}
    for directory, dirs, names in os.walk(root):
        assert not [d for d in dirs if os.path.islink(os.path.join(directory, d))]
        for name in names:
            path = os.path.join(directory, name)
            assert stat.S_ISREG(os.lstat(path).st_mode), path
            found[os.path.relpath(path, root)] = Path(path).read_bytes()
        if not dirs and not names and directory != str(root):
            found[os.path.relpath(directory, root) + "/"] = b"(empty directory)"
    return found


def test_without_collection_stale_generations_are_reused_and_stay_whole(tmp_path: Path) -> None:
    """Back-to-back changes, no idle time to collect: the oldest stale generation due for removal is
    renamed and patched into the next one, at the change or ahead of it (prepare). Every change must
    give exactly the wanted tree, and the stale generations a reader may still hold must keep exactly
    what they held."""
    target = tmp_path / "t"
    writer = opened(target)
    universe = ["a", "b", "c/d", "c/e", "c/f/g", "c/f/h", "f", "f/x", "c", "c/f", "k/l/m/n", "k/l"]
    rng = random.Random(4)
    held: dict[str, dict[str, bytes]] = {}  # generation -> its tree when it went live
    for n in range(60):
        values: dict[str, bytes] = {}
        for path in rng.sample(universe, rng.randint(0, len(universe))):
            # a file and a directory cannot share a name: the first one drawn wins, as in keys.plan
            if not any(p == path or p.startswith(path + "/") or path.startswith(p + "/") for p in values):
                values[path] = rng.choice([b"1", b"2", f"{n}".encode()])
        if hold(writer, values):
            held[writer.generation] = dict(values)  # type: ignore[index]
        if rng.random() < 0.5:
            writer.prepare()  # as the dispenser does after a swap, or not (a failed prepare)
        assert tree(target / DATA_LINK) == values
        assert len(generations(target)) <= MAX_STALE + 2  # live, stale, and one prepared
        for name in generations(target):
            # a prepared generation (not live yet) equals the live one
            assert tree(target / name) == held.get(name, values), f"change {n} altered {name}"


def test_a_stale_generation_changed_by_someone_else_is_not_reused(tmp_path: Path) -> None:
    target = tmp_path / "t"
    writer = opened(target)
    hold(writer, {"d/a": b"0"})
    first = writer.generation
    (target / str(first) / "d" / "planted").write_bytes(b"x")
    for n in range(1, MAX_STALE + 2):
        hold(writer, {"d/a": str(n).encode()})
    assert first not in generations(target)
    assert tree(target / DATA_LINK) == {"d/a": str(MAX_STALE + 1).encode()}


def test_a_failed_write_into_a_reused_generation_removes_it(tmp_path: Path) -> None:
    target = tmp_path / "t"
    writer = opened(target)
    for n in range(MAX_STALE + 1):
        hold(writer, {"a": str(n).encode()})
    live, before = writer.generation, generations(target)

    def failing(path: str) -> bytes:
        raise OSError(28, "No space left on device", path)

    with pytest.raises(WriteError, match="No space left"):
        writer.apply({"a": digest(b"new")}, failing)
    assert writer.generation == live and generations(target) == before[1:]
    assert (target / "a").read_bytes() == str(MAX_STALE).encode()


def temporary_links(target: Path) -> list[str]:
    return [name for name in os.listdir(target) if name.startswith("..data_tmp.")]


def made_ahead(target: Path) -> list[str]:
    """Generations newer than the live one: made ahead (or being reused), not live yet."""
    live = os.readlink(target / DATA_LINK)
    return [name for name in generations(target) if name > live]


def named_at(name: str) -> int:
    """A generation name's time, in nanoseconds since the epoch."""
    seconds = datetime.strptime(name[2:21], "%Y_%m_%d_%H_%M_%S").replace(tzinfo=UTC).timestamp()
    return int(seconds) * 1_000_000_000 + int(name[22:])


def test_prepare_makes_the_next_generation_a_twin_of_the_live_one(tmp_path: Path) -> None:
    target = tmp_path / "t"
    writer = opened(target)
    hold(writer, {"a": b"1", "d/b": b"2"})
    writer.prepare()
    [upcoming] = made_ahead(target)
    assert tree(target / upcoming) == tree(target / DATA_LINK) == {"a": b"1", "d/b": b"2"}
    assert os.stat(target / upcoming / "d" / "b").st_ino == os.stat(target / "d" / "b").st_ino
    directory = os.stat(target / upcoming).st_ino

    def only_changed(path: str) -> bytes:
        assert path == "a", "an unchanged file was rewritten"
        return b"3"

    writer.apply({"a": digest(b"3"), "d/b": digest(b"2")}, only_changed)
    assert os.stat(target / str(writer.generation)).st_ino == directory  # the twin went live
    assert str(writer.generation) > upcoming and temporary_links(target) == []
    assert tree(target / DATA_LINK) == {"a": b"3", "d/b": b"2"}
    writer.prepare()
    writer.close()
    assert temporary_links(target) == [] and made_ahead(target) == []
    assert len(generations(target)) == 2  # the live one and the one it replaced: no twin left


def test_a_generation_is_named_for_when_it_went_live(tmp_path: Path) -> None:
    target = tmp_path / "t"
    writer = opened(target)
    hold(writer, {"a": b"1"})
    writer.prepare()
    [upcoming] = made_ahead(target)
    time.sleep(0.05)
    before = time.time_ns()
    hold(writer, {"a": b"2"})
    assert named_at(str(writer.generation)) >= before > named_at(upcoming)


def test_a_prepared_generation_changed_by_someone_else_is_not_used(tmp_path: Path) -> None:
    target = tmp_path / "t"
    writer = opened(target)
    hold(writer, {"d/a": b"1"})
    writer.prepare()
    [upcoming] = made_ahead(target)
    (target / upcoming / "d" / "planted").write_bytes(b"x")
    hold(writer, {"d/a": b"2"})
    assert tree(target / DATA_LINK) == {"d/a": b"2"} and temporary_links(target) == []
    assert upcoming not in generations(target)


def test_changed_files_are_written_into_blanks_made_ahead_and_never_into_strangers(tmp_path: Path) -> None:
    target, outside = tmp_path / "t", tmp_path / "precious"
    outside.write_bytes(b"keep")
    writer = Writer(target, Ownership(mode=0o640))
    writer.open()
    hold(writer, {"a": b"1", "d/b": b"2"})
    writer.prepare()
    blanks = target / "..blanks"
    made = sorted(os.listdir(blanks))
    assert len(made) == 8 and all(stat.S_IMODE(os.stat(blanks / n).st_mode) == 0o640 for n in made)
    hold(writer, {"a": b"3", "d/b": b"4"})
    assert len(os.listdir(blanks)) == 6 and tree(target / DATA_LINK) == {"a": b"3", "d/b": b"4"}
    assert stat.S_IMODE(os.stat(target / "a").st_mode) == 0o640
    writer.prepare()
    for name in os.listdir(blanks):  # someone swaps every blank for a link to another file
        os.unlink(blanks / name)
        os.link(outside, blanks / name)
    hold(writer, {"a": b"5", "d/b": b"6"})
    assert outside.read_bytes() == b"keep" and tree(target / DATA_LINK) == {"a": b"5", "d/b": b"6"}
    writer.close()
    assert not blanks.exists()


def test_fsync_mode_writes_the_same_tree(tmp_path: Path) -> None:
    writer = opened(tmp_path / "t", fsync=True)
    assert hold(writer, {"a": b"1", "d/e/f": b"2"})
    assert hold(writer, {"a": b"1", "d/e/f": b"3"})
    assert (tmp_path / "t" / "d" / "e" / "f").read_bytes() == b"3"


def test_per_file_modes_are_set_before_the_first_byte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from projector.settings.values import parse_file_mode

    ownership = Ownership(mode=0o600, file_modes=(parse_file_mode("**/*.crt=0644"),))
    writer = Writer(tmp_path / "t", ownership)
    writer.open()
    real_write, seen = os.write, {}

    def checking_write(fd: int, data: bytes) -> int:
        seen[bytes(data)] = stat.S_IMODE(os.fstat(fd).st_mode)
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", checking_write)
    hold(writer, {"a.crt": b"1", "d/b.key": b"2"})
    writer.prepare()  # now through blank files made ahead, made with the base mode
    hold(writer, {"a.crt": b"3", "d/b.key": b"4"})
    monkeypatch.undo()
    assert seen == {b"1": 0o644, b"2": 0o600, b"3": 0o644, b"4": 0o600}
    assert stat.S_IMODE(os.stat(tmp_path / "t" / "d").st_mode) == 0o700


def test_a_file_mode_changed_between_runs_is_a_new_generation(tmp_path: Path) -> None:
    from projector.settings.values import parse_file_mode

    target = tmp_path / "t"
    hold(opened(target), {"a.crt": b"1", "b": b"2"})
    writer = Writer(target, Ownership(file_modes=(parse_file_mode("*.crt=0644"),)))
    writer.open()
    assert hold(writer, {"a.crt": b"1", "b": b"2"})
    assert stat.S_IMODE(os.stat(target / "a.crt").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(target / "b").st_mode) == 0o600


def test_per_file_owners_are_set_before_the_first_byte_and_their_directories_let_them_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from projector.settings.values import parse_glob

    if os.geteuid() != 0:
        pytest.skip("giving files to another user needs root")
    nobody = (parse_glob("d/*.key"), 65534, None)
    writer = Writer(tmp_path / "t", Ownership(mode=0o600, uid=0, gid=0, file_owners=(nobody,)))
    writer.open()
    real_write, seen = os.write, {}

    def checking_write(fd: int, data: bytes) -> int:
        st = os.fstat(fd)
        seen[bytes(data)] = (st.st_uid, st.st_gid)
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", checking_write)
    hold(writer, {"a": b"1", "d/b.key": b"2", "e/c": b"3"})
    writer.prepare()  # now through blank files made ahead, made with the default owner
    hold(writer, {"a": b"4", "d/b.key": b"5", "e/c": b"3"})
    monkeypatch.undo()
    assert seen == {b"1": (0, 0), b"2": (65534, 0), b"3": (0, 0), b"4": (0, 0), b"5": (65534, 0)}
    live = tmp_path / "t" / DATA_LINK
    modes = {name: stat.S_IMODE(os.stat(live / name).st_mode) for name in (".", "d", "e")}
    assert modes == {".": 0o701, "d": 0o701, "e": 0o700}  # search for others above the key alone
    hold(writer, {"a": b"4", "e/c": b"3"})  # the key goes: so does the search it needed
    assert stat.S_IMODE(os.stat(live).st_mode) == 0o700
