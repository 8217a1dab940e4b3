"""Kafka's topics and ACLs, made to match the rights table, as the operator.

Safe to repeat: topics that exist are kept; an ACL of a principal the table covers
that the table does not list is deleted, a missing one created. devstack runs it
once Kafka is up; on Kubernetes a Job runs ``python -m ops.trust kafka``.

aiokafka's admin client has no ACL calls, so the requests are sent raw. Kafka 4
accepts only version 1 and up of Create/Describe/DeleteAcls (KIP-896); aiokafka's
version 1 structs are the newest it encodes correctly (its version 2 is a flexible
version with the old, non-compact schema).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code
from aiokafka.protocol.admin import (
    CreateAclsRequest_v1,
    DeleteAclsRequest_v1,
    DescribeAclsRequest_v1,
)
from aiokafka.protocol.api import Request

from ops.trust.rights import KAFKA_GRANTS, KAFKA_PARTIES
from shared.messaging.kafka import KafkaIdentity
from shared.messaging.topics import TOPICS

log = logging.getLogger(__name__)

# Kafka's wire codes (org.apache.kafka.common.acl / resource).
_ANY: Final = 1
_LITERAL: Final = 3
_ALLOW: Final = 3
RESOURCE_TYPES: Final = {"TOPIC": 2, "GROUP": 3, "CLUSTER": 4, "TRANSACTIONAL_ID": 5}
OPERATIONS: Final = {
    "ALL": 2,
    "READ": 3,
    "WRITE": 4,
    "CREATE": 5,
    "DELETE": 6,
    "ALTER": 7,
    "DESCRIBE": 8,
    "CLUSTER_ACTION": 9,
    "DESCRIBE_CONFIGS": 10,
    "ALTER_CONFIGS": 11,
    "IDEMPOTENT_WRITE": 12,
}
ALL_HOSTS: Final = "*"


@dataclass(frozen=True, order=True)
class Acl:
    """One ALLOW/DENY entry as Kafka stores it (codes as on the wire)."""

    resource_type: int
    resource_name: str
    pattern_type: int
    principal: str
    host: str
    operation: int
    permission: int

    @classmethod
    def allow(cls, name: str, operation: str, resource_type: str, resource: str) -> Acl:
        """``name`` (a certificate's common name) may do ``operation`` on the literal
        resource, from any host."""
        return cls(
            RESOURCE_TYPES[resource_type],
            resource,
            _LITERAL,
            f"User:{name}",
            ALL_HOSTS,
            OPERATIONS[operation],
            _ALLOW,
        )

    def __str__(self) -> str:
        def name(codes: dict[str, int], code: int) -> str:
            return next((k for k, v in codes.items() if v == code), str(code))

        allow = "allow" if self.permission == _ALLOW else f"permission {self.permission}"
        return (
            f"{allow} {self.principal} {name(OPERATIONS, self.operation)} on"
            f" {name(RESOURCE_TYPES, self.resource_type)} {self.resource_name}"
        )

    def wire(self) -> tuple[int, str, int, str, str, int, int]:
        return (
            self.resource_type,
            self.resource_name,
            self.pattern_type,
            self.principal,
            self.host,
            self.operation,
            self.permission,
        )


def desired_acls() -> set[Acl]:
    """The table as Kafka ACLs: literal names, any host, allow."""
    return {Acl.allow(g.principal, g.operation, g.resource_type, g.resource) for g in KAFKA_GRANTS}


def covered_principals() -> set[str]:
    """Whose ACLs the table decides entirely: every service, also one with no rights, and
    the gateway, which has none."""
    principals = {f"User:{name}" for name in KAFKA_PARTIES}
    return principals | {f"User:{g.principal}" for g in KAFKA_GRANTS}


class _DescribeAcls(Request[DescribeAclsRequest_v1]):
    API_KEY = 29

    def build(self, request_struct_class: type[DescribeAclsRequest_v1]) -> DescribeAclsRequest_v1:
        # Every ACL: any resource type, name, pattern, principal, host, operation, permission.
        return request_struct_class(_ANY, None, _ANY, None, None, _ANY, _ANY)


class _CreateAcls(Request[CreateAclsRequest_v1]):
    API_KEY = 30

    def __init__(self, acls: Iterable[Acl]) -> None:
        self._acls = [acl.wire() for acl in acls]

    def build(self, request_struct_class: type[CreateAclsRequest_v1]) -> CreateAclsRequest_v1:
        return request_struct_class(self._acls)


class _DeleteAcls(Request[DeleteAclsRequest_v1]):
    API_KEY = 31

    def __init__(self, acls: Iterable[Acl]) -> None:
        self._filters = [acl.wire() for acl in acls]  # each filter matches exactly one ACL

    def build(self, request_struct_class: type[DeleteAclsRequest_v1]) -> DeleteAclsRequest_v1:
        return request_struct_class(self._filters)


def _raise_for(code: int, message: str | None, what: str) -> None:
    if code:
        raise for_code(code)(f"{what}: {message or ''}")


async def _send(admin: AIOKafkaAdminClient, request: Request[Any]) -> Any:
    # Any broker forwards ACL changes to the KRaft controller.
    return await admin._send_request(request)


async def describe_acls(admin: AIOKafkaAdminClient) -> set[Acl]:
    response = await _send(admin, _DescribeAcls())
    _raise_for(response.error_code, response.error_message, "describing ACLs")
    return {
        Acl(rtype, rname, pattern, principal, host, operation, permission)
        for rtype, rname, pattern, acls in response.resources
        for principal, host, operation, permission in acls
    }


@dataclass(frozen=True)
class AclChanges:
    created: list[Acl]
    deleted: list[Acl]


async def apply_acls(admin: AIOKafkaAdminClient) -> AclChanges:
    """Converges the broker's ACLs of the covered principals to the table."""
    want = desired_acls()
    have = await describe_acls(admin)
    covered = covered_principals()
    missing = sorted(want - have)
    extra = sorted(acl for acl in have - want if acl.principal in covered)
    await create_acls(admin, missing)
    await delete_acls(admin, extra)
    return AclChanges(missing, extra)


async def create_acls(admin: AIOKafkaAdminClient, acls: list[Acl]) -> None:
    if acls:
        response = await _send(admin, _CreateAcls(acls))
        for acl, (code, message) in zip(acls, response.creation_responses, strict=True):
            _raise_for(code, message, f"creating {acl}")


async def delete_acls(admin: AIOKafkaAdminClient, acls: list[Acl]) -> None:
    if acls:
        response = await _send(admin, _DeleteAcls(acls))
        for acl, (code, message, _) in zip(acls, response.filter_responses, strict=True):
            _raise_for(code, message, f"deleting {acl}")


async def ensure_topics(admin: AIOKafkaAdminClient, replication_factor: int) -> list[str]:
    """Creates the saga's missing topics and waits until each partition has a leader;
    returns the ones it created."""
    created: list[str] = []
    existing = set(await admin.list_topics())
    missing = [name for name in TOPICS if name not in existing]
    if missing:
        new = [NewTopic(name, TOPICS[name], replication_factor) for name in missing]
        try:
            response = await admin.create_topics(new, timeout_ms=30000)
        except TopicAlreadyExistsError:  # another provisioner was faster
            response = None
        for entry in response.topic_errors if response is not None else []:
            topic, code = entry[0], entry[1]
            if code == 0:
                created.append(topic)
            elif code != TopicAlreadyExistsError.errno:
                message = entry[2] if len(entry) > 2 else ""
                raise for_code(code)(f"creating topic {topic}: {message}")
    await _wait_for_leaders(admin)
    return created


async def _wait_for_leaders(admin: AIOKafkaAdminClient, timeout: float = 30.0) -> None:
    """Ready means producible: right after a (re)start or creation, partitions can be
    leaderless for a moment and the first produce of a test would fail on that."""
    deadline = time.monotonic() + timeout
    while True:
        leaderless = []
        for topic in await admin.describe_topics(list(TOPICS)):
            parts = topic.get("partitions") or []
            if topic.get("error_code") or not parts or any(p["leader"] < 0 for p in parts):
                leaderless.append(topic["topic"])
        if not leaderless:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"topics still without leaders after {timeout:.0f}s: {leaderless}")
        await asyncio.sleep(0.2)


def operator_admin(
    bootstrap: str, tls_dir: Path, *, plaintext: bool = False, **options: Any
) -> AIOKafkaAdminClient:
    """An admin client acting as the operator, a super user: the only one that may
    create topics and write ACLs (``plaintext``: bench-plain's broker, which has no ACLs)."""
    return AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        **KafkaIdentity.operator(tls_dir, plaintext=plaintext).client_options(),
        **options,
    )


@dataclass(frozen=True)
class Provisioned:
    topics: list[str]
    acls: AclChanges


async def provision(
    bootstrap: str, tls_dir: Path, replication_factor: int = 1, *, plaintext: bool = False
) -> Provisioned:
    """The topics, then the ACLs on them (none on bench-plain's broker: no authorizer)."""
    admin = operator_admin(
        bootstrap, tls_dir, plaintext=plaintext, request_timeout_ms=10000, client_id="trust"
    )
    try:
        await admin.start()
        topics = await ensure_topics(admin, replication_factor)
        changes = AclChanges([], []) if plaintext else await apply_acls(admin)
    finally:
        with contextlib.suppress(Exception):
            await admin.close()
    for acl in changes.created:
        log.info("kafka: granted %s", acl)
    for acl in changes.deleted:
        log.info("kafka: revoked %s", acl)
    return Provisioned(topics, changes)
