"""Every attack on the parts below the gRPC ports, tried from outside: each must be
refused by the server itself, with nothing changed.

The attacker holds what a compromised pod would: a real service's certificate and its
database password (``product``, which owns none of what is attacked), or nothing at all,
or a certificate of a CA of its own under a privileged name. A verifier (the operator)
reads the data before and after each attempt, so "refused" is checked on the data too.

    python -m devstack.attack --profile dev        # against `make run`'s stack
    (in Kubernetes, `make k8s-real-check` runs it as the trust-check Job)
"""

from __future__ import annotations

import asyncio
import ssl
import tempfile
from collections.abc import Awaitable, Callable
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


async def _attempt(
    attack: str,
    act: Callable[[], Awaitable[str]],
    state: Callable[[], Awaitable[object]] | None = None,
) -> Outcome:
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
    attacker: Identity,
    attacker_pg_password: str,
    verifier: Identity,
    wait: float = 60.0,
) -> list[Outcome]:
    await reachable(where, verifier, wait)
    trust = attacker.tls_dir
    with tempfile.TemporaryDirectory() as scratch:
        # A CA of the attacker's own, with certificates under every privileged name.
        forged = Path(scratch)
        authority.ensure_authority(forged)
        impostor_root = Identity(forged, identities.ETCD_ROOT)
        impostor_operator = Identity(forged, tls.OPERATOR)
        return await _battery(
            where, trust, attacker, attacker_pg_password, verifier, impostor_root, impostor_operator
        )


async def _battery(
    where: Endpoints,
    trust: Path,
    attacker: Identity,
    pg_password: str,
    verifier: Identity,
    impostor_root: Identity,
    impostor_operator: Identity,
) -> list[Outcome]:
    name = attacker.name
    jwks, config = rights.JWKS_KEY, f"{rights.CONFIG_PREFIX}global"
    forged_instance = f"{rights.SERVICES_PREFIX}order/forged"

    def etcd(key: str, who: Identity | None, plain: bool = False) -> Callable[[], Awaitable[str]]:
        return lambda: _etcd_put(where.etcd, trust, who, key, plain)

    def revision(key: str) -> Callable[[], Awaitable[object]]:
        return lambda: _etcd_revision(where.etcd, verifier, key)

    def produce(topic: str, who: Identity | None) -> Callable[[], Awaitable[str]]:
        return lambda: _kafka_produce(where.kafka, trust, who, topic)

    def offsets(topic: str) -> Callable[[], Awaitable[object]]:
        return lambda: _kafka_end_offsets(where.kafka, verifier, topic)

    own_role, other_db = rights.pg_role(name), rights.pg_database("order")
    outcomes = [
        await _attempt(
            "etcd: a plaintext client writes the JWKS", etcd(jwks, None, True), revision(jwks)
        ),
        await _attempt(
            "etcd: TLS without a client certificate writes the JWKS",
            etcd(jwks, None),
            revision(jwks),
        ),
        await _attempt(
            "etcd: another CA's 'root' writes the JWKS", etcd(jwks, impostor_root), revision(jwks)
        ),
        await _attempt(f"etcd: {name} writes the JWKS", etcd(jwks, attacker), revision(jwks)),
        await _attempt(f"etcd: {name} writes {config}", etcd(config, attacker), revision(config)),
        await _attempt(
            f"etcd: {name} registers a forged order instance",
            etcd(forged_instance, attacker),
            revision(forged_instance),
        ),
        await _attempt(
            f"kafka: a plaintext client produces to {INVENTORY}",
            produce(INVENTORY, None),
            offsets(INVENTORY),
        ),
        await _attempt(
            f"kafka: another CA's 'operator' produces to {INVENTORY}",
            produce(INVENTORY, impostor_operator),
            offsets(INVENTORY),
        ),
    ]
    for topic in (ORDERS, INVENTORY, PAYMENTS):
        outcomes.append(
            await _attempt(
                f"kafka: {name} produces a forged InventoryReserved to {topic}",
                produce(topic, attacker),
                offsets(topic),
            )
        )

    def pg(role: str, password: str, db: str, encrypt: bool = True) -> Callable[[], Awaitable[str]]:
        return lambda: _pg_connect(where.postgres, trust, role, password, db, encrypt=encrypt)

    outcomes += [
        await _attempt(
            f"postgres: {own_role} without TLS",
            pg(own_role, pg_password, rights.pg_database(name), False),
        ),
        await _attempt(
            f"postgres: {own_role} opens {other_db}", pg(own_role, pg_password, other_db)
        ),
        await _attempt(
            f"postgres: {own_role}'s password for the administrator",
            pg(rights.PG_ADMIN, pg_password, "postgres"),
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
