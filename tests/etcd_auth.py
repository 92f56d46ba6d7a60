"""etcd authentication for tests: root, and alice whose role ``reader`` may only read /cfg/."""

from __future__ import annotations

from etcd_server import Etcd
from pyetcd import etcdrpc
from pyetcd.etcdrpc import auth_pb2

ROOT_PASSWORD = "root-pw-Zq7"
ALICE_PASSWORD = "alice-pw-Kx9"
READ_CFG = auth_pb2.Permission(permType=auth_pb2.Permission.READ, key=b"/cfg/", range_end=b"/cfg0")


def enable_auth(etcd: Etcd) -> None:
    """root, and alice who may only read /cfg/; then auth on."""
    with etcd.client() as client:
        stub = etcdrpc.AuthStub(client.channel)
        stub.RoleAdd(etcdrpc.AuthRoleAddRequest(name="root"))
        stub.UserAdd(etcdrpc.AuthUserAddRequest(name="root", password=ROOT_PASSWORD))
        stub.UserGrantRole(etcdrpc.AuthUserGrantRoleRequest(user="root", role="root"))
        stub.AuthEnable(etcdrpc.AuthEnableRequest())
    etcd.user = ("root", ROOT_PASSWORD)
    add_alice(etcd)


def add_alice(etcd: Etcd) -> None:
    """The user alice with the role reader (created if missing), which may read /cfg/."""
    with etcd.client() as client:
        stub, md = etcdrpc.AuthStub(client.channel), client.metadata
        roles = stub.RoleList(etcdrpc.AuthRoleListRequest(), metadata=md).roles
        if "reader" not in roles:
            stub.RoleAdd(etcdrpc.AuthRoleAddRequest(name="reader"), metadata=md)
        grant_reading(etcd)
        stub.UserAdd(etcdrpc.AuthUserAddRequest(name="alice", password=ALICE_PASSWORD), metadata=md)
        stub.UserGrantRole(etcdrpc.AuthUserGrantRoleRequest(user="alice", role="reader"), metadata=md)


def grant_reading(etcd: Etcd) -> None:
    with etcd.client() as client:
        request = etcdrpc.AuthRoleGrantPermissionRequest(name="reader", perm=READ_CFG)
        etcdrpc.AuthStub(client.channel).RoleGrantPermission(request, metadata=client.metadata)


def revoke_reading(etcd: Etcd) -> None:
    with etcd.client() as client:
        request = etcdrpc.AuthRoleRevokePermissionRequest(role="reader", key=b"/cfg/", range_end=b"/cfg0")
        etcdrpc.AuthStub(client.channel).RoleRevokePermission(request, metadata=client.metadata)


def remove_alice(etcd: Etcd) -> None:
    with etcd.client() as client:
        request = etcdrpc.AuthUserDeleteRequest(name="alice")
        etcdrpc.AuthStub(client.channel).UserDelete(request, metadata=client.metadata)
