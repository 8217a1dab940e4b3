"""Every attack on the parts below the gRPC ports, tried from outside: each must be
refused by the server itself, with nothing changed.

The attacker holds what a compromised pod would: a real party's certificate and its
database password (``product``, which owns none of what is attacked, and the
``gateway``, the one pod that faces the outside), or nothing at all, or a certificate of
a CA of its own under a privileged name. A verifier (the operator) reads the data
before and after each attempt, so "refused" is checked on the data too.

    python -m devstack.attack --profile dev        # against `make run`'s stack
    (in Kubernetes, `make k8s-real-check` runs it as the trust-check Job)
"""

from __future__ import annotations

import asyncio
import ssl
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import asyncpg
import grpc
from aetcd.rpc import rpc_pb2, rpc_pb2_grpc
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from ops.trust import rights
from pki import authority, identities
from shared import tls
from shared.messaging.envelope import wrap
from shared.messaging.topics import INVENTORY, ORDERS, PAYMENTS, TOPICS
from shop.events.v1 import inventory_events_pb2

TIMEOUT = 10.0
# An attempt (its answer: "" when it went through), and a read of what it would change.
Act = Callable[[], Awaitable[str]]
State = Callable[[], Awaitable[object]]


@dataclass(frozen=True)
class Endpoints:
    etcd: str  # host:port
    kafka: str
    postgres: str


@dataclass(frozen=True)
class Identity:
    """A TLS dir holding ca.pem (the CA trusted for servers) and ``name``'s pair."""

    tls_dir: Path
    name: str

    def files(self) -> tuple[bytes, bytes, bytes]:
        return (
            tls.ca_file(self.tls_dir).read_bytes(),
            tls.key_file(self.tls_dir, self.name).read_bytes(),
            tls.cert_file(self.tls_dir, self.name).read_bytes(),
        )


@dataclass(frozen=True)
class Attacker:
    """Stolen credentials: a party's certificate and key, and its database role's password."""

    identity: Identity
    pg_password: str

    @property
    def name(self) -> str:
        return self.identity.name


@dataclass(frozen=True)
class Outcome:
    attack: str
    refused: bool
    unchanged: bool
    answer: str  # what the server said, on one line

    @property
    def held(self) -> bool:
        return self.refused and self.unchanged


# --- etcd --------------------------------------------------------------------------------


def _etcd_channel(
    endpoint: str, trust: Path, who: Identity | None, plain: bool
) -> grpc.aio.Channel:
    if plain:
        return grpc.aio.insecure_channel(endpoint)
    ca = tls.ca_file(trust).read_bytes()
    if who is None:
        credentials = grpc.ssl_channel_credentials(ca)
    else:
        _, key, cert = who.files()
        credentials = grpc.ssl_channel_credentials(ca, private_key=key, certificate_chain=cert)
    return grpc.aio.secure_channel(
        endpoint, credentials, options=[("grpc.ssl_target_name_override", tls.ETCD)]
    )


async def _etcd_put(endpoint: str, trust: Path, who: Identity | None, key: str, plain: bool) -> str:
    """'' when the write went through, else the server's (or the handshake's) answer."""
    async with _etcd_channel(endpoint, trust, who, plain) as channel:
        try:
            await rpc_pb2_grpc.KVStub(channel).Put(
                rpc_pb2.PutRequest(key=key.encode(), value=b'{"forged": true}'), timeout=TIMEOUT
            )
        except grpc.aio.AioRpcError as exc:
            return f"{exc.code().name}: {exc.details()}"
    return ""


async def _etcd_revision(endpoint: str, verifier: Identity, key: str) -> int:
    async with _etcd_channel(endpoint, verifier.tls_dir, verifier, False) as channel:
        answer = await rpc_pb2_grpc.KVStub(channel).Range(
            rpc_pb2.RangeRequest(key=key.encode()), timeout=TIMEOUT
        )
    return answer.kvs[0].mod_revision if answer.kvs else 0


# --- Kafka -------------------------------------------------------------------------------


def _kafka_context(trust: Path, who: Identity) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(tls.ca_file(trust)))
    context.load_cert_chain(
        tls.cert_file(who.tls_dir, who.name), tls.key_file(who.tls_dir, who.name)
    )
    return context


def _kafka_security(trust: Path, who: Identity | None) -> dict[str, object]:
    if who is None:
        return {"security_protocol": "PLAINTEXT"}
    return {"security_protocol": "SSL", "ssl_context": _kafka_context(trust, who)}


async def _kafka_produce(bootstrap: str, trust: Path, who: Identity | None, topic: str) -> str:
    forged = wrap(
        inventory_events_pb2.InventoryReserved(order_id="forged-order", user_id="demo"),
        "forged-order",
    )
    # Not idempotent: an idempotent producer asks for a producer id first, and a refusal
    # there would hide whether the topic itself refuses the record.
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, request_timeout_ms=5_000, **_kafka_security(trust, who)
    )
    try:
        async with asyncio.timeout(TIMEOUT * 2):
            await producer.start()
            await producer.send_and_wait(topic, forged.SerializeToString(), key=b"forged-order")
    except Exception as exc:  # every failure here is the refusal being tested
        return _one_line(exc)
    finally:
        await producer.stop()
    return ""


async def _kafka_end_offsets(bootstrap: str, verifier: Identity, topic: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, **_kafka_security(verifier.tls_dir, verifier)
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(TOPICS[topic])]
        ends = await consumer.end_offsets(partitions)
        return {tp.partition: offset for tp, offset in ends.items()}
    finally:
        await consumer.stop()


# --- PostgreSQL --------------------------------------------------------------------------


async def _pg_connect(
    host_port: str, trust: Path, role: str, password: str, db: str, *, encrypt: bool
) -> str:
    host, _, port = host_port.rpartition(":")
    if encrypt:
        mode = f"sslmode=verify-full&sslrootcert={quote(str(tls.ca_file(trust)))}"
    else:
        mode = "sslmode=disable"
    dsn = f"postgresql://{quote(role)}:{quote(password)}@{host}:{port}/{db}?{mode}"
    try:
        conn = await asyncpg.connect(dsn, timeout=TIMEOUT)
    except Exception as exc:  # the refusal being tested
        return _one_line(exc)
    await conn.close()
    return ""


# --- the battery -------------------------------------------------------------------------


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "no answer"
    return text[:200]


async def _attempt(attack: str, act: Act, state: State | None = None) -> Outcome:
    before = await state() if state is not None else None
    answer = await act()
    after = await state() if state is not None else None
    return Outcome(
        attack, refused=answer != "", unchanged=before == after, answer=answer or "accepted"
    )


async def reachable(where: Endpoints, verifier: Identity, wait: float) -> None:
    """Every port takes a TCP connection, and the verifier reads etcd and Kafka, within
    ``wait`` seconds. Without this a refusal could be the network's (a NetworkPolicy not
    yet in force for a new pod) and not the server's, which is what is under test."""
    deadline = asyncio.get_running_loop().time() + wait
    while True:
        try:
            for address in (where.etcd, where.kafka, where.postgres):
                host, _, port = address.rpartition(":")
                _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 5)
                writer.close()
            await _etcd_revision(where.etcd, verifier, rights.JWKS_KEY)
            await _kafka_end_offsets(where.kafka, verifier, INVENTORY)
            return
        except Exception:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(2)


async def run_attacks(
    where: Endpoints,
    attackers: Sequence[Attacker],
    verifier: Identity,
    wait: float = 60.0,
) -> list[Outcome]:
    """The attacks without credentials once, then each attacker's with its own."""
    if not attackers:
        raise ValueError("no attacker: name at least one party whose credentials are stolen")
    await reachable(where, verifier, wait)
    battery = _Battery(where, attackers[0].identity.tls_dir, verifier)
    with tempfile.TemporaryDirectory() as scratch:
        # A CA of the attacker's own, with certificates under every privileged name.
        forged = Path(scratch)
        authority.ensure_authority(forged, (identities.ETCD_ROOT, tls.OPERATOR))
        outcomes = await battery.without_credentials(
            Identity(forged, identities.ETCD_ROOT), Identity(forged, tls.OPERATOR)
        )
    for attacker in attackers:
        outcomes += await battery.with_credentials(attacker)
    return outcomes


# Whose topic the forged events are written to, and whose database is opened: order's,
# the saga's hub, which neither attacker owns.
OTHER_SERVICE = "order"


@dataclass(frozen=True)
class _Battery:
    where: Endpoints
    trust: Path  # the CA the attackers trust the servers by
    verifier: Identity

    def etcd(self, key: str, who: Identity | None, plain: bool = False) -> Act:
        return lambda: _etcd_put(self.where.etcd, self.trust, who, key, plain)

    def revision(self, key: str) -> State:
        return lambda: _etcd_revision(self.where.etcd, self.verifier, key)

    def produce(self, topic: str, who: Identity | None) -> Act:
        return lambda: _kafka_produce(self.where.kafka, self.trust, who, topic)

    def offsets(self, topic: str) -> State:
        return lambda: _kafka_end_offsets(self.where.kafka, self.verifier, topic)

    def pg(self, role: str, password: str, db: str, encrypt: bool = True) -> Act:
        return lambda: _pg_connect(
            self.where.postgres, self.trust, role, password, db, encrypt=encrypt
        )

    async def without_credentials(
        self, impostor_root: Identity, impostor_operator: Identity
    ) -> list[Outcome]:
        jwks = rights.JWKS_KEY
        return [
            await _attempt(
                "etcd: a plaintext client writes the JWKS",
                self.etcd(jwks, None, True),
                self.revision(jwks),
            ),
            await _attempt(
                "etcd: TLS without a client certificate writes the JWKS",
                self.etcd(jwks, None),
                self.revision(jwks),
            ),
            await _attempt(
                "etcd: another CA's 'root' writes the JWKS",
                self.etcd(jwks, impostor_root),
                self.revision(jwks),
            ),
            await _attempt(
                f"kafka: a plaintext client produces to {INVENTORY}",
                self.produce(INVENTORY, None),
                self.offsets(INVENTORY),
            ),
            await _attempt(
                f"kafka: another CA's 'operator' produces to {INVENTORY}",
                self.produce(INVENTORY, impostor_operator),
                self.offsets(INVENTORY),
            ),
        ]

    async def with_credentials(self, attacker: Attacker) -> list[Outcome]:
        name, who, password = attacker.name, attacker.identity, attacker.pg_password
        jwks, config = rights.JWKS_KEY, f"{rights.CONFIG_PREFIX}global"
        forged_instance = f"{rights.SERVICES_PREFIX}{OTHER_SERVICE}/forged"
        outcomes = [
            await _attempt(
                f"etcd: {name} writes the JWKS", self.etcd(jwks, who), self.revision(jwks)
            ),
            await _attempt(
                f"etcd: {name} writes {config}", self.etcd(config, who), self.revision(config)
            ),
            await _attempt(
                f"etcd: {name} registers a forged {OTHER_SERVICE} instance",
                self.etcd(forged_instance, who),
                self.revision(forged_instance),
            ),
        ]
        for topic in (ORDERS, INVENTORY, PAYMENTS):
            outcomes.append(
                await _attempt(
                    f"kafka: {name} produces a forged InventoryReserved to {topic}",
                    self.produce(topic, who),
                    self.offsets(topic),
                )
            )
        own_role, other_db = rights.pg_role(name), rights.pg_database(OTHER_SERVICE)
        outcomes += [
            await _attempt(
                f"postgres: {own_role} without TLS",
                self.pg(own_role, password, rights.pg_database(name), False),
            ),
            await _attempt(
                f"postgres: {own_role} opens {other_db}", self.pg(own_role, password, other_db)
            ),
            await _attempt(
                f"postgres: {own_role}'s password for the administrator",
                self.pg(rights.PG_ADMIN, password, "postgres"),
            ),
        ]
        return outcomes


def report(outcomes: list[Outcome]) -> str:
    lines = []
    for o in outcomes:
        verdict = "refused" if o.held else ("CHANGED" if o.refused else "ACCEPTED")
        lines.append(f"{verdict:<8} {o.attack}\n         {o.answer}")
    held = sum(o.held for o in outcomes)
    lines.append(f"{held} of {len(outcomes)} attacks refused with nothing changed")
    return "\n".join(lines)
