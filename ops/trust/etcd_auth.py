"""etcd's users and roles from the rights table, and its authentication switched on.

Runs as etcd's ``root`` identity (certificate common name ``root``): before auth is on,
etcd lets anyone with a certificate of the CA administer it; afterwards only root.
Every run converges on ``ETCD_ROLES``: missing users and roles are added, a role's
permissions that the table no longer lists are revoked, users and roles the table
does not know are removed. So it is safe to repeat, from devstack's provision step
and from a Kubernetes Job (``python -m ops.trust etcd``).

Users have no password: etcd authenticates them by their certificate's common name
(``--client-cert-auth``), and a password would be a second secret to rotate.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from aetcd import rpc

from ops.trust.rights import ETCD_ADMIN, ETCD_ROLES, KeyRange
from shared.registry.etcd import EtcdClient, etcd_client
from shared.tls import ClientTLS

log = logging.getLogger(__name__)

# etcd's built-in administrator role; its user must exist before auth can be enabled.
ROOT_ROLE: Final = "root"
READ: Final = rpc.Permission.READ
READWRITE: Final = rpc.Permission.READWRITE

# (key, range_end) -> permission type, as etcd keys a role's permissions: granting the
# same range again replaces its type, so a range both read and written is READWRITE.
Permissions = dict[tuple[bytes, bytes], int]


def permissions(ranges: Iterable[KeyRange]) -> Permissions:
    """The permissions a role of these key ranges holds in etcd."""
    wanted: Permissions = {}
    for key_range in ranges:
        span = (key_range.start.encode(), key_range.end.encode())
        kind = READWRITE if key_range.write else READ
        if wanted.get(span) != READWRITE:
            wanted[span] = kind
    return wanted


def desired_roles(table: Mapping[str, Iterable[KeyRange]] = ETCD_ROLES) -> dict[str, Permissions]:
    return {role: permissions(ranges) for role, ranges in table.items()}


@dataclass
class RoleChange:
    """What turns a role's current permissions into the wanted ones."""

    grant: Permissions = field(default_factory=dict)
    revoke: list[tuple[bytes, bytes]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.grant or self.revoke)


def role_change(current: Permissions, wanted: Permissions) -> RoleChange:
    """Grants for what is missing or of another type, revokes for what is not wanted."""
    change = RoleChange()
    for span, kind in wanted.items():
        if current.get(span) != kind:
            change.grant[span] = kind
    change.revoke = sorted(span for span in current if span not in wanted)
    return change


@dataclass
class Report:
    """What one run changed (empty once etcd matches the table)."""

    changes: list[str] = field(default_factory=list)

    def note(self, what: str) -> None:
        log.info("etcd auth: %s", what)
        self.changes.append(what)


def _span(key: bytes, end: bytes) -> str:
    return f"[{key.decode()}, {end.decode()})" if end else key.decode()


async def _roles(stub: rpc.AuthStub) -> set[str]:
    return set((await stub.RoleList(rpc.AuthRoleListRequest())).roles)


async def _users(stub: rpc.AuthStub) -> set[str]:
    return set((await stub.UserList(rpc.AuthUserListRequest())).users)


async def _ensure_user(
    stub: rpc.AuthStub, users: set[str], name: str, role: str, report: Report
) -> None:
    if name not in users:
        options = rpc.UserAddOptions(no_password=True)
        await stub.UserAdd(rpc.AuthUserAddRequest(name=name, options=options))
        report.note(f"user {name} added")
    held = set((await stub.UserGet(rpc.AuthUserGetRequest(name=name))).roles)
    if role not in held:
        await stub.UserGrantRole(rpc.AuthUserGrantRoleRequest(user=name, role=role))
        report.note(f"user {name} granted role {role}")
    for stale in sorted(held - {role}):
        await stub.UserRevokeRole(rpc.AuthUserRevokeRoleRequest(name=name, role=stale))
        report.note(f"user {name} lost role {stale}")


async def _ensure_role(
    stub: rpc.AuthStub, roles: set[str], name: str, wanted: Permissions, report: Report
) -> None:
    if name not in roles:
        await stub.RoleAdd(rpc.AuthRoleAddRequest(name=name))
        report.note(f"role {name} added")
        current: Permissions = {}
    else:
        answer = await stub.RoleGet(rpc.AuthRoleGetRequest(role=name))
        current = {(p.key, p.range_end): p.permType for p in answer.perm}
    change = role_change(current, wanted)
    for (key, end), kind in change.grant.items():
        perm = rpc.Permission(key=key, range_end=end, permType=kind)
        await stub.RoleGrantPermission(rpc.AuthRoleGrantPermissionRequest(name=name, perm=perm))
        mode = "readwrite" if kind == READWRITE else "read"
        report.note(f"role {name} granted {mode} {_span(key, end)}")
    for key, end in change.revoke:
        request = rpc.AuthRoleRevokePermissionRequest(role=name, key=key, range_end=end)
        await stub.RoleRevokePermission(request)
        report.note(f"role {name} lost {_span(key, end)}")


async def apply(client: EtcdClient, table: Mapping[str, Iterable[KeyRange]] = ETCD_ROLES) -> Report:
    """Makes etcd's users and roles those of ``table`` and switches auth on.

    ``client`` must act as etcd's root (or reach an etcd whose auth is still off).
    """
    await client.connect()
    stub = rpc.AuthStub(client.channel)
    report = Report()
    roles, users = await _roles(stub), await _users(stub)
    wanted = desired_roles(table)
    if ROOT_ROLE not in roles:
        await stub.RoleAdd(rpc.AuthRoleAddRequest(name=ROOT_ROLE))
        report.note(f"role {ROOT_ROLE} added")
    await _ensure_user(stub, users, ETCD_ADMIN, ROOT_ROLE, report)
    for name, perms in wanted.items():
        await _ensure_role(stub, roles, name, perms, report)
        await _ensure_user(stub, users, name, name, report)
    # The table is the whole truth: a party it dropped loses its access.
    for user in sorted(users - set(wanted) - {ETCD_ADMIN}):
        await stub.UserDelete(rpc.AuthUserDeleteRequest(name=user))
        report.note(f"user {user} removed")
    for role in sorted(roles - set(wanted) - {ROOT_ROLE}):
        await stub.RoleDelete(rpc.AuthRoleDeleteRequest(role=role))
        report.note(f"role {role} removed")
    # Enabling it again is a no-op for etcd, so a run always ends with auth on.
    await stub.AuthEnable(rpc.AuthEnableRequest())
    return report


async def apply_at(endpoint: str, tls_dir: Path, timeout: float = 10.0) -> Report:
    """``apply`` against etcd at host:port, as the root identity of ``tls_dir``."""
    client = etcd_client(endpoint, tls=ClientTLS(tls_dir, ETCD_ADMIN), timeout=timeout)
    try:
        # A few dozen small calls; the bound keeps an unreachable etcd from hanging a Job.
        async with asyncio.timeout(timeout * 3):
            return await apply(client)
    finally:
        await client.close()
