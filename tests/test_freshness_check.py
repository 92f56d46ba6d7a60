"""The freshness check's decisions, against a real etcd: current, behind, stuck, refused.

The check acts through its source (the dispenser's watch loop); here a small stand-in plays the source,
so that the watch can be made to fall behind on purpose. etcd and the connection are real.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from etcd_auth import ALICE_PASSWORD, enable_auth, revoke_reading
from etcd_server import EtcdServer

from projector.connection import Connection, is_permission
from projector.freshness import Confirmation, Freshness, Position, Stuck
from projector.settings import Endpoint, EtcdConfig


class Receiver:
    def __init__(self) -> None:
        self.position: Position | None = None
        self.confirmations: list[Confirmation] = []

    def settled(self) -> Position | None:
        return self.position

    def confirmed(self, confirmation: Confirmation) -> None:
        self.confirmations.append(confirmation)


class StandIn:
    """What Freshness uses of a Source; ``revision`` is what its watch delivered."""

    def __init__(self) -> None:
        self.prefix = b"/cfg/"
        self.receiver = Receiver()
        self.revision: int | None = None
        self.fresh_revision = 0
        self.stopping = threading.Event()
        self.interrupted: list[Exception] = []

    def interrupt(self, connection: Connection, exc: Exception) -> None:
        self.interrupted.append(exc)


def config(etcd: EtcdServer, user: str | None = None, password: str | None = None) -> EtcdConfig:
    return EtcdConfig((Endpoint("127.0.0.1", etcd.member.client_port),), username=user, password=password)


@pytest.fixture
def check(etcd: EtcdServer) -> Iterator[tuple[StandIn, Freshness, Connection]]:
    source = StandIn()
    connection = Connection(config(etcd), config(etcd).endpoints[0])
    yield source, Freshness(source, 1.0), connection  # type: ignore[arg-type]
    connection.close()


def test_files_that_hold_etcd_state_are_current(
    etcd: EtcdServer, check: tuple[StandIn, Freshness, Connection]
) -> None:
    source, freshness, connection = check
    revision = etcd.put(("/cfg/a", "1"), ("/cfg/b", "2"))
    source.revision = revision
    source.receiver.position = Position(revision, keys=2)
    now = etcd.put(("/elsewhere", "x"))  # etcd moves on, the prefix does not
    freshness.check(connection)
    [confirmation] = source.receiver.confirmations
    assert confirmation.current and confirmation.revision == now
    assert source.fresh_revision == now and source.interrupted == []


def test_a_deleted_key_not_yet_on_disk_is_behind(
    etcd: EtcdServer, check: tuple[StandIn, Freshness, Connection]
) -> None:
    source, freshness, connection = check
    revision = etcd.put(("/cfg/a", "1"), ("/cfg/b", "2"))
    source.receiver.position = Position(revision, keys=2)
    source.revision = etcd.delete("/cfg/b")  # delivered, not written yet
    freshness.check(connection)
    assert [c.current for c in source.receiver.confirmations] == [False]
    assert source.fresh_revision == 0


def test_a_change_the_watch_never_delivers_is_stuck(
    etcd: EtcdServer, check: tuple[StandIn, Freshness, Connection]
) -> None:
    source, freshness, connection = check
    revision = etcd.put(("/cfg/a", "1"))
    source.revision = revision
    source.receiver.position = Position(revision, keys=1)
    etcd.put(("/cfg/a", "2"))  # the watch delivers nothing of it
    freshness.check(connection)  # behind: it may be on its way
    assert source.interrupted == []
    freshness.check(connection)  # an interval later, still not delivered
    [stuck] = source.interrupted
    assert isinstance(stuck, Stuck) and "had still not come through the watch" in str(stuck)


def test_a_change_delivered_between_two_checks_is_not_stuck(
    etcd: EtcdServer, check: tuple[StandIn, Freshness, Connection]
) -> None:
    source, freshness, connection = check
    revision = etcd.put(("/cfg/a", "1"))
    source.revision = revision
    source.receiver.position = Position(revision, keys=1)
    later = etcd.put(("/cfg/a", "2"))
    freshness.check(connection)
    source.revision = later  # delivered; the dispenser is still writing it
    freshness.check(connection)
    assert source.interrupted == []
    assert [c.current for c in source.receiver.confirmations] == [False, False]


def test_a_revoked_role_ends_the_watch_as_a_permission_failure(tmp_path: Path) -> None:
    with EtcdServer(tmp_path / "auth-etcd").running() as etcd:
        etcd.put(("/cfg/a", "1"))
        enable_auth(etcd)
        source = StandIn()
        alice = config(etcd, "alice", ALICE_PASSWORD)
        connection = Connection(alice, alice.endpoints[0])
        try:
            freshness = Freshness(source, 1.0)  # type: ignore[arg-type]
            freshness.check(connection)
            assert source.interrupted == [] and len(source.receiver.confirmations) == 1
            revoke_reading(etcd)
            freshness.check(connection)
            [refused] = source.interrupted
            assert is_permission(refused)
        finally:
            connection.close()
