"""The rights of every party below the gRPC ports, as data (README, Trust boundaries).

Each party proves who it is with a certificate of the project's CA (pki/):
its common name is its etcd user and its Kafka principal (``User:<name>``).
PostgreSQL's clients log in as their own role, with a password generated per stack.
Nothing here grants anything by network position.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from pki.identities import ETCD_ROOT, KAFKA, PROMETHEUS_TARGETS, SERVICES
from shared.messaging.topics import DEADLETTER, INVENTORY, ORDERS, PAYMENTS
from shared.tls import GATEWAY, OPERATOR

# --- etcd ------------------------------------------------------------------------------------

SERVICES_PREFIX: Final = "/services/"
CONFIG_PREFIX: Final = "/config/"
STATUS_PREFIX: Final = "/config-status/"
HISTORY_PREFIX: Final = "/config-history/"
JWKS_KEY: Final = "/config/auth/jwks"
AUTH_PREFIX: Final = "/config/auth/"


def prefix_end(prefix: str) -> str:
    """etcd's range end for a prefix: the prefix with its last byte plus one."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


@dataclass(frozen=True)
class KeyRange:
    """[start, end) of etcd's key space; end "" is the single key ``start``."""

    start: str
    end: str = ""
    write: bool = False

    @classmethod
    def prefix(cls, prefix: str, *, write: bool = False) -> KeyRange:
        return cls(prefix, prefix_end(prefix), write)


def _service_ranges(service: str) -> tuple[KeyRange, ...]:
    """A service's, and the gateway's: it registers and applies config as a service does."""
    ranges = [
        # Its own registrations and the config it applied, under its lease.
        KeyRange.prefix(f"{SERVICES_PREFIX}{service}/", write=True),
        KeyRange.prefix(f"{STATUS_PREFIX}{service}/", write=True),
        # Discovery of its peers, and the config documents with the JWKS.
        KeyRange.prefix(SERVICES_PREFIX),
        KeyRange.prefix(CONFIG_PREFIX),
    ]
    if service == "user":  # the signing keys' public halves, which it alone publishes
        ranges.append(KeyRange(JWKS_KEY, write=True))
    return tuple(ranges)


# etcd user (= certificate common name) -> its one role's key ranges. etcd's permissions
# only add, so the operator's write range is /config/ with /config/auth/ cut out.
ETCD_ROLES: Final[dict[str, tuple[KeyRange, ...]]] = {
    **{service: _service_ranges(service) for service in SERVICES},
    # The edge: its own registrations and config status; discovery, config and the JWKS.
    GATEWAY: _service_ranges(GATEWAY),
    OPERATOR: (
        KeyRange(CONFIG_PREFIX, AUTH_PREFIX, write=True),
        KeyRange(prefix_end(AUTH_PREFIX), prefix_end(CONFIG_PREFIX), write=True),
        KeyRange.prefix(HISTORY_PREFIX, write=True),
        KeyRange.prefix(CONFIG_PREFIX),
        KeyRange.prefix(STATUS_PREFIX),
        KeyRange.prefix(SERVICES_PREFIX),
    ),
    PROMETHEUS_TARGETS: (KeyRange.prefix(SERVICES_PREFIX),),
}
# etcd's own administrator: switches authentication on and writes the roles, nothing else.
ETCD_ADMIN: Final = ETCD_ROOT

# --- Kafka -----------------------------------------------------------------------------------

# The topic each service's outbox publishes to; only its owner may write it.
PUBLISHES: Final[dict[str, str]] = {"order": ORDERS, "inventory": INVENTORY, "payment": PAYMENTS}
# The topics each service's saga consumer reads, in its own group (named after the service).
CONSUMES: Final[dict[str, tuple[str, ...]]] = {
    "order": (INVENTORY, PAYMENTS),
    "inventory": (ORDERS, PAYMENTS),
    "payment": (INVENTORY, ORDERS),
}


@dataclass(frozen=True)
class KafkaGrant:
    principal: str  # the certificate's common name
    operation: str  # Kafka's AclOperation name: WRITE, READ, ALL, ...
    resource_type: str  # TOPIC, GROUP, CLUSTER
    resource: str  # a literal name ("kafka-cluster" for the cluster)


def _kafka_grants() -> tuple[KafkaGrant, ...]:
    grants: list[KafkaGrant] = []
    for service, topic in PUBLISHES.items():
        grants.append(KafkaGrant(service, "WRITE", "TOPIC", topic))
        grants.append(KafkaGrant(service, "WRITE", "TOPIC", DEADLETTER))
        for source in CONSUMES[service]:
            grants.append(KafkaGrant(service, "READ", "TOPIC", source))
        grants.append(KafkaGrant(service, "READ", "GROUP", service))
    return tuple(grants)


KAFKA_GRANTS: Final = _kafka_grants()
# Whose ACLs the table decides entirely: every service, and the gateway, which has none
# (it uses no Kafka), so an ACL naming it that the table does not list is deleted.
KAFKA_PARTIES: Final = (*SERVICES, GATEWAY)
# Kafka's super.users, which no ACL limits: the broker itself (controller and
# inter-broker traffic) and the operator (people, `make` tools and the Job that creates
# the topics and writes these ACLs: someone has to hold the right to grant rights).
KAFKA_SUPER_USERS: Final = (KAFKA, OPERATOR)

# --- PostgreSQL ------------------------------------------------------------------------------

# The administrator that creates the databases and roles; no service logs in as it.
PG_ADMIN: Final = "shop"


def pg_role(service: str) -> str:
    """The service's (or the gateway's) own role, which owns its database (and has the
    database's name)."""
    return f"shop_{service}"


def pg_database(service: str) -> str:
    return f"shop_{service}"


# Each service's database and role, and the gateway's (its sessions): party -> role.
PG_ROLES: Final[dict[str, str]] = {party: pg_role(party) for party in (*SERVICES, GATEWAY)}
# The audit (ops/audit.py: the smoke and load Jobs, `make audit`) reads the saga's
# databases and may write nothing: PostgreSQL's pg_read_all_data, and CONNECT on them.
PG_AUDITOR: Final = "shop_audit"
AUDITED: Final = ("inventory", "order", "payment")
