"""The freshness check's decisions, against a real etcd: current, behind, stuck, refused.

The check returns a verdict that the source acts on (a confirmation, or the failure to end the watch
with); here the test plays the source, so that the watch can be made to fall behind on purpose. etcd
and the connection are real. While etcd's revision does not move the check reads one key per prefix
and keeps its last full reading: the cases below that check twice without a write show that this
cheaper step still tells stuck, refused and a key short apart.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from etcd_auth import ALICE_PASSWORD, enable_auth, revoke_reading
from etcd_server import EtcdServer
from pyetcd import etcdrpc
from pyetcd.etcdrpc import auth_pb2

from projector.batches import Confirmation, Position
from projector.connection import Connection, is_permission
from projector.freshness import Freshness, Stuck
from projector.settings import Endpoint, EtcdConfig


def config(etcd: EtcdServer, user: str | None = None, password: str | None = None) -> EtcdConfig:
    return EtcdConfig((Endpoint("127.0.0.1", etcd.member.client_port),), username=user, password=password)


@pytest.fixture
def check(etcd: EtcdServer) -> Iterator[tuple[Freshness, Connection]]:
    connection = Connection(config(etcd), config(etcd).endpoints[0])
    yield Freshness((b"/cfg/",), 1.0), connection
    connection.close()


def test_files_that_hold_etcd_state_are_current(
    etcd: EtcdServer, check: tuple[Freshness, Connection]
) -> None:
    freshness, connection = check
    revision = etcd.put(("/cfg/a", "1"), ("/cfg/b", "2"))
    now = etcd.put(("/elsewhere", "x"))  # etcd moves on, the prefix does not
    verdict = freshness.check(connection, Position(revision, keys=2), delivered=revision)
    assert isinstance(verdict, Confirmation)
    assert verdict.current and verdict.revision == now


def test_a_deleted_key_not_yet_on_disk_is_behind(
    etcd: EtcdServer, check: tuple[Freshness, Connection]
) -> None:
    freshness, connection = check
    revision = etcd.put(("/cfg/a", "1"), ("/cfg/b", "2"))
    delivered = etcd.delete("/cfg/b")  # delivered, not written yet
    verdict = freshness.check(connection, Position(revision, keys=2), delivered)
    assert isinstance(verdict, Confirmation) and not verdict.current


def test_a_change_the_watch_never_delivers_is_stuck(
    etcd: EtcdServer, check: tuple[Freshness, Connection]
) -> None:
    freshness, connection = check
    revision = etcd.put(("/cfg/a", "1"))
    settled = Position(revision, keys=1)
    etcd.put(("/cfg/a", "2"))  # the watch delivers nothing of it
    behind = freshness.check(connection, settled, revision)  # behind: it may be on its way
    assert isinstance(behind, Confirmation) and not behind.current
    stuck = freshness.check(connection, settled, revision)  # an interval later, still not delivered
    assert isinstance(stuck, Stuck) and "had still not come through the watch" in str(stuck)


def test_a_change_delivered_between_two_checks_is_not_stuck(
    etcd: EtcdServer, check: tuple[Freshness, Connection]
) -> None:
    freshness, connection = check
    revision = etcd.put(("/cfg/a", "1"))
    settled = Position(revision, keys=1)
    later = etcd.put(("/cfg/a", "2"))
    verdicts = [freshness.check(connection, settled, revision)]
    verdicts.append(freshness.check(connection, settled, later))  # delivered; still being written
    assert [(isinstance(v, Confirmation) and v.current) for v in verdicts] == [False, False]
    assert all(isinstance(v, Confirmation) for v in verdicts)


def test_a_revoked_role_ends_the_watch_as_a_permission_failure(tmp_path: Path) -> None:
    with EtcdServer(tmp_path / "auth-etcd").running() as etcd:
        revision = etcd.put(("/cfg/a", "1"))
        enable_auth(etcd)
        alice = config(etcd, "alice", ALICE_PASSWORD)
        connection = Connection(alice, alice.endpoints[0])
        try:
            freshness = Freshness((b"/cfg/",), 1.0)
            assert isinstance(freshness.check(connection, Position(revision, 1), revision), Confirmation)
            revoke_reading(etcd)  # etcd's revision does not move: the one-key read is what is refused
            refused = freshness.check(connection, Position(revision, 1), revision)
            assert isinstance(refused, Exception) and is_permission(refused)
        finally:
            connection.close()


def test_several_prefixes_are_read_at_one_revision_and_counted_together(etcd: EtcdServer) -> None:
    connection = Connection(config(etcd), config(etcd).endpoints[0])
    try:
        freshness = Freshness((b"/cfg/", b"/nginx/"), 1.0)
        etcd.put(("/cfg/a", "1"), ("/cfg/b", "2"))
        revision = etcd.put(("/nginx/n.conf", "n"))
        verdict = freshness.check(connection, Position(revision, keys=3), delivered=revision)
        assert isinstance(verdict, Confirmation) and verdict.current
        later = etcd.put(("/nginx/n.conf", "changed"))  # the second prefix's change counts too
        verdict = freshness.check(connection, Position(revision, keys=3), delivered=later)
        assert isinstance(verdict, Confirmation) and not verdict.current
        verdict = freshness.check(connection, Position(later, keys=2), delivered=later)  # a key short
        assert isinstance(verdict, Confirmation) and not verdict.current
    finally:
        connection.close()


def test_a_deletion_after_a_confirmation_is_told_apart(
    etcd: EtcdServer, check: tuple[Freshness, Connection]
) -> None:
    freshness, connection = check
    revision = etcd.put(("/cfg/a", "1"), ("/cfg/b", "2"))
    settled = Position(revision, keys=2)
    for _ in range(2):  # the second at an unchanged revision, from the kept reading
        verdict = freshness.check(connection, settled, revision)
        assert isinstance(verdict, Confirmation) and verdict.current
    etcd.delete("/cfg/b")  # a deletion leaves no newer modification; only the count tells
    behind = freshness.check(connection, settled, revision)
    assert isinstance(behind, Confirmation) and not behind.current


def test_a_lost_permission_on_the_second_prefix_is_noticed_while_etcd_stands_still(
    tmp_path: Path,
) -> None:
    nginx = auth_pb2.Permission(permType=auth_pb2.Permission.READ, key=b"/nginx/", range_end=b"/nginx0")
    with EtcdServer(tmp_path / "auth-etcd").running() as etcd:
        revision = etcd.put(("/cfg/a", "1"), ("/nginx/n.conf", "n"))
        enable_auth(etcd)
        with etcd.client() as client:
            auth = etcdrpc.AuthStub(client.channel)
            grant = etcdrpc.AuthRoleGrantPermissionRequest(name="reader", perm=nginx)
            auth.RoleGrantPermission(grant, metadata=client.metadata)
            alice = config(etcd, "alice", ALICE_PASSWORD)
            connection = Connection(alice, alice.endpoints[0])
            try:
                freshness = Freshness((b"/cfg/", b"/nginx/"), 1.0)
                for _ in range(2):  # a full reading, then the kept one
                    verdict = freshness.check(connection, Position(revision, 2), revision)
                    assert isinstance(verdict, Confirmation) and verdict.current
                revoke = etcdrpc.AuthRoleRevokePermissionRequest(
                    role="reader", key=b"/nginx/", range_end=b"/nginx0"
                )
                auth.RoleRevokePermission(revoke, metadata=client.metadata)
                refused = freshness.check(connection, Position(revision, 2), revision)
                assert isinstance(refused, Exception) and is_permission(refused)
            finally:
                connection.close()
