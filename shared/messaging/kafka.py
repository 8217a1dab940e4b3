"""How every Kafka client of the shop is tuned, so that a broker restart or a lost
instance costs seconds, not the library defaults' tens of seconds.

- ``session_timeout_ms`` (3 s, library default 10 s): how long the group coordinator
  waits for a silent member (SIGKILLed, SIGSTOPped, cut off) before its partitions go
  to the others. It also bounds a rebalance (aiokafka's rebalance timeout defaults to
  it). The broker must allow it: ``group.min.session.timeout.ms`` is lowered to 1 s in
  devstack/kafka.py and deploy/k8s/infra/server.properties (Kafka's default is 6 s).
- ``heartbeat_interval_ms`` (1 s, a third of the session): a live member is told of a
  rebalance within a second.
- ``metadata_max_age_ms`` (10 s, library default 5 min): a restarted broker's new
  partition leadership is learnt within seconds even on a client that saw no error.
- ``retry_backoff_ms`` (200 ms): the pause between retries of a failed request, and so
  how fast a client reconnects once the broker listens again.
- ``fetch_max_wait_ms`` (100 ms, library default 500 ms): how long the broker holds an
  empty fetch. Data on any partition of the fetch answers it at once, so this is not a
  hop's latency; it is how often an idle consumer asks again. 10 ms cost each idle
  consumer 7 % of a core and the broker 19 % (six consumers, `make run REPLICAS=2`), with
  the same saga P50/P95 in `make bench` (179/468 ms against 182/412 ms at 100 ms).
- ``request_timeout_ms`` (5 s, library default 40 s): an acknowledgement that never comes
  (the broker died with the request) fails in 5 s. Consumers too: a restarted broker
  (Kafka 4.1) can load a partition of its group coordinator twice at once, for two
  leader epochs, and a JoinGroup handled by the state it then drops is never answered
  (its log: "Ignored load completion from __consumer_offsets-0 because context is in
  ACTIVE state", and the group's generation going back); the member waited the whole
  40 s, its group stalled, in `make chaos`. A JoinGroup legitimately waits at most the
  rebalance timeout (3 s, the session timeout).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from shared.tls import OPERATOR, ca_file, cert_file, key_file


@dataclass(frozen=True)
class KafkaIdentity:
    """Who a client is to Kafka: the certificate ``name`` of the CA in ``tls_dir``.

    The broker requires a client certificate on every listener and takes its common
    name as the principal (``User:<name>``) its ACLs are about (ops/trust/rights.py).
    The files are read for each new client, so one made after a renewal uses the new
    certificate; a running client keeps its connection.
    """

    tls_dir: Path
    name: str
    # PLAINTEXT, no certificate: only for the baseline of `make bench-trust`, a stack whose
    # broker has no TLS listener (ServiceSettings.infra_tls). A real broker has SSL
    # listeners only and requires a client certificate, so a client that sets this is
    # refused, never let in with less: it cannot weaken a deployment.
    plaintext: bool = False

    @classmethod
    def operator(cls, tls_dir: Path, *, plaintext: bool = False) -> KafkaIdentity:
        return cls(tls_dir, OPERATOR, plaintext)

    def ssl_context(self) -> ssl.SSLContext:
        # What aiokafka's create_ssl_context builds (the broker's name checked against
        # its certificate, which names 127.0.0.1 and its Kubernetes names), without its
        # log line on every reconnect.
        context = ssl.create_default_context(cafile=ca_file(self.tls_dir))
        context.load_cert_chain(
            cert_file(self.tls_dir, self.name), key_file(self.tls_dir, self.name)
        )
        return context

    def client_options(self) -> dict[str, Any]:
        """The keyword arguments that make an aiokafka client connect as this identity."""
        if self.plaintext:
            return {"security_protocol": "PLAINTEXT"}
        return {"security_protocol": "SSL", "ssl_context": self.ssl_context()}


@dataclass(frozen=True)
class KafkaTuning:
    session_timeout_ms: int = 3_000
    heartbeat_interval_ms: int = 1_000
    metadata_max_age_ms: int = 10_000
    retry_backoff_ms: int = 200
    fetch_max_wait_ms: int = 100
    request_timeout_ms: int = 5_000


def kafka_producer(
    bootstrap: str, identity: KafkaIdentity, tuning: KafkaTuning | None = None
) -> AIOKafkaProducer:
    tuning = tuning or KafkaTuning()
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        **identity.client_options(),
        enable_idempotence=True,  # implies acks=all: no loss, no broker-side duplicates
        acks="all",
        # 0, not 2: a hop does not wait for company (a saga has four). Batches still form
        # while a request is in flight. Measured ABAB: P50 at 20 orders/s 92/41 ms against
        # 97/72, P95 at 60/s 541/280 against 931/447, the same CPU per order
        # (docs/decisions/read-path-and-saga-hops.md).
        linger_ms=0,
        request_timeout_ms=tuning.request_timeout_ms,
        metadata_max_age_ms=tuning.metadata_max_age_ms,
        retry_backoff_ms=tuning.retry_backoff_ms,
    )
