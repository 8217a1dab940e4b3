"""Kafka: a single KRaft node (broker + controller in one JVM) per profile, run from Maven jars."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from devstack.component import Component, run_coro
from devstack.config import HOST
from devstack.install import KAFKA_LOG4J, ensure_java, ensure_kafka, find_java, kafka_libs_dir
from devstack.kafka_renewal import reload_keystore, served_serial
from devstack.process import StackError, run, spawn_detached, tail
from devstack.topics import REPLICATION_FACTOR, TOPICS
from ops.trust.kafka_acls import operator_admin, provision
from ops.trust.rights import KAFKA_SUPER_USERS
from pki.authority import ensure_authority, keystore_file, load_certificate
from pki.identities import KAFKA
from shared.tls import ca_file, cert_file

log = logging.getLogger("devstack")

_SERVER_PROPERTIES = """\
# Written by devstack on every start; change devstack/kafka.py instead.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@{host}:{controller}
{listeners}log.dirs={log_dirs}
{security}
num.partitions=6
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Tests start consumer groups constantly; the default 3s delay would add up.
group.initial.rebalance.delay.ms=0
# The services' consumers use a 3 s session (shared/messaging/kafka.py), below Kafka's 6 s floor.
group.min.session.timeout.ms=1000
# The defaults (50 partitions each) make the first consumer group / transaction on a fresh stack
# wait for dozens of partitions to be created, for no benefit on a single node.
offsets.topic.num.partitions=10
# Every consumer commits after each batch, and a restarted broker's group coordinator
# replays __consumer_offsets before it answers a group: with the default 100 MB segments the
# active one is never compacted (25 MB, 270,000 records and 1.8 s to load after a day of dev
# runs). 1 MB segments roll and compact (applies when the topic is created).
offsets.topic.segment.bytes=1048576
transaction.state.log.num.partitions=10
# After a SIGKILL the controller refuses the restarted broker (DUPLICATE_BROKER_REGISTRATION)
# until the dead incarnation's session expires: 9s by default, dominating crash-restart recovery.
broker.heartbeat.interval.ms=500
broker.session.timeout.ms=2500

# Sized for a 2-core dev box running two profiles side by side.
num.network.threads=2
num.io.threads=4
log.cleaner.dedupe.buffer.size=33554432
log.retention.hours=168
"""

_LISTENERS = """\
listeners=SSL://{host}:{broker},CONTROLLER://{host}:{controller}
advertised.listeners=SSL://{host}:{broker}
controller.listener.names=CONTROLLER
inter.broker.listener.name=SSL
listener.security.protocol.map=CONTROLLER:SSL,SSL:SSL
"""

_SECURITY = """
# Every listener is TLS with a client certificate of the project's CA (pki/);
# the broker talks to its controller with its own `kafka` certificate.
ssl.client.auth=required
ssl.keystore.type=PEM
ssl.keystore.location={keystore}
ssl.truststore.type=PEM
ssl.truststore.location={truststore}
# The certificate's common name is the principal: CN=order -> User:order.
ssl.principal.mapping.rules=RULE:^CN=([^,]+)$/$1/,DEFAULT
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users={super_users}
"""

# bench-plain only (the baseline of `make bench-trust`): no TLS, no authorizer, no ACLs.
_PLAINTEXT_LISTENERS = """\
listeners=PLAINTEXT://{host}:{broker},CONTROLLER://{host}:{controller}
advertised.listeners=PLAINTEXT://{host}:{broker}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
"""

# The format tool is a short-lived JVM: skip the optimising JIT and use the cheapest GC.
_TOOL_JVM = ["-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"]
_BROKER_JVM = [
    "-Xmx512m",
    "-Xms256m",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
]


def _random_cluster_id() -> str:
    """Same shape as `kafka-storage random-uuid`: url-safe base64 of 16 random bytes, no padding."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):  # Kafka avoids these: they look like CLI flags
            return cid


def _read_properties(path: Path) -> dict[str, str]:
    props = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            props[key.strip()] = value.strip()
    return props


class Kafka(Component):
    name = "kafka"
    binary_hint = "kafka.Kafka"
    stop_timeout = 45.0
    start_timeout = 120.0

    @property
    def ports(self) -> tuple[int, ...]:
        return (self.profile.ports.kafka_broker, self.profile.ports.kafka_controller)

    @property
    def home(self) -> Path:
        return self.profile.dir / "kafka"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def properties_file(self) -> Path:
        return self.home / "server.properties"

    @property
    def log4j_dir(self) -> Path:
        return self.profile.logs_dir / "kafka"

    @property
    def tls_dir(self) -> Path:
        return self.profile.dir / "tls"

    def diagnostics(self) -> str:
        # stdout only catches JVM-level failures; the broker itself logs through log4j.
        server_log = self.log4j_dir / "server.log"
        return f"{super().diagnostics()}\n--- end of {server_log}:\n{tail(server_log)}"

    def install(self) -> None:
        ensure_java()
        ensure_kafka()

    # --- on-disk state --------------------------------------------------------------------------

    @property
    def plaintext(self) -> bool:
        """bench-plain's broker: PLAINTEXT listeners, no authorizer (devstack/config.py)."""
        return not self.profile.infra_tls

    def _properties(self, log_dirs: Path) -> str:
        ports = {
            "host": HOST,
            "broker": self.profile.ports.kafka_broker,
            "controller": self.profile.ports.kafka_controller,
        }
        security = _SECURITY.format(
            keystore=keystore_file(self.tls_dir, KAFKA),
            truststore=ca_file(self.tls_dir),
            super_users=";".join(f"User:{name}" for name in KAFKA_SUPER_USERS),
        )
        return _SERVER_PROPERTIES.format(
            **ports,
            listeners=(_PLAINTEXT_LISTENERS if self.plaintext else _LISTENERS).format(**ports),
            log_dirs=log_dirs,
            security="" if self.plaintext else security,
        )

    def _write_properties(self, path: Path, log_dirs: Path) -> None:
        path.write_text(self._properties(log_dirs))

    def start(self) -> bool:
        # A broker running with other properties (a stack from before this version of
        # the file, e.g. with plaintext listeners) would never answer the probe: restart it.
        if self.pid(cleanup=True) is not None and self._properties_changed():
            log.info("kafka: its server.properties changed; restarting it")
            self.stop()
        return super().start()

    def _properties_changed(self) -> bool:
        try:
            return self.properties_file.read_text() != self._properties(self.data_dir)
        except OSError:
            return False

    def _cluster_id(self) -> str:
        """Persisted beside the data so a re-format after a half-done one keeps the same id."""
        id_file = self.home / "cluster.id"
        if id_file.is_file() and id_file.read_text().strip():
            return id_file.read_text().strip()
        cid = _random_cluster_id()
        id_file.write_text(cid + "\n")
        return cid

    def prepare(self) -> None:
        # Its keystore, also when only Kafka is started (Stack.up has made it already).
        ensure_authority(self.tls_dir)
        self.home.mkdir(parents=True, exist_ok=True)
        self.log4j_dir.mkdir(parents=True, exist_ok=True)
        self._write_properties(self.properties_file, self.data_dir)
        meta = self.data_dir / "meta.properties"
        if meta.is_file():
            # Keep cluster.id in sync with what the storage was really formatted with.
            cid = _read_properties(meta).get("cluster.id")
            if cid:
                (self.home / "cluster.id").write_text(cid + "\n")
            return
        if self.data_dir.exists():
            log.warning(
                "kafka: %s has no meta.properties (half-formatted); re-formatting", self.data_dir
            )
            shutil.rmtree(self.data_dir)
        self._format()

    def _format(self) -> None:
        # Format a scratch dir and rename it, so a crash mid-format never leaves something that
        # looks formatted. meta.properties does not record its own path, so renaming is safe.
        scratch = self.home / "data.formatting"
        shutil.rmtree(scratch, ignore_errors=True)
        props = self.home / "format.properties"
        self._write_properties(props, scratch)
        cid = self._cluster_id()
        log.info("kafka: formatting %s (cluster id %s)", self.data_dir, cid)
        run(
            [
                *self._java_prefix(_TOOL_JVM),
                "kafka.tools.StorageTool", "format",
                "--cluster-id", cid,
                "--config", str(props),
            ],
            what="kafka storage format",
            cwd=self.home,
            env=_java_env(),
            timeout=300,
        )  # fmt: skip
        if not (scratch / "meta.properties").is_file():
            raise StackError(f"kafka storage format left no meta.properties in {scratch}")
        scratch.rename(self.data_dir)
        props.unlink()

    def _java_prefix(self, jvm: list[str]) -> list[str]:
        java = find_java()
        if java is None:
            raise StackError("java not found; run `python -m devstack install`")
        return [
            str(java),
            *jvm,
            f"-Dkafka.logs.dir={self.log4j_dir}",
            f"-Dlog4j2.configurationFile={KAFKA_LOG4J}",
            "-cp",
            f"{kafka_libs_dir()}/*",
        ]

    # --- process --------------------------------------------------------------------------------

    def launch(self) -> int:
        argv = [*self._java_prefix(_BROKER_JVM), "kafka.Kafka", str(self.properties_file)]
        return spawn_detached(argv, self.log_file, cwd=self.home, env=_java_env())

    def _admin(self) -> Any:
        return operator_admin(
            self.endpoint,
            self.tls_dir,
            plaintext=self.plaintext,
            request_timeout_ms=5000,
            client_id="devstack",
        )

    def probe(self) -> bool:
        return run_coro(self._probe())

    async def _probe(self) -> bool:
        admin = self._admin()
        try:
            await admin.start()
            cluster = await admin.describe_cluster()
            return bool(cluster.get("brokers"))
        except Exception:  # not accepting requests yet, still loading metadata, ...
            return False
        finally:
            with contextlib.suppress(Exception):
                await admin.close()

    def provision(self) -> None:
        """The saga's topics, then the ACLs of the rights table (ops/trust/kafka_acls.py)."""
        if not self.plaintext:
            self.reload_certificate(only_if_renewed=True)
        done = run_coro(
            provision(self.endpoint, self.tls_dir, REPLICATION_FACTOR, plaintext=self.plaintext)
        )
        for topic in done.topics:
            log.info("kafka: created topic %s (%d partitions)", topic, TOPICS[topic])
        if done.acls.created or done.acls.deleted:
            log.info(
                "kafka: ACLs: %d granted, %d revoked",
                len(done.acls.created),
                len(done.acls.deleted),
            )

    def reload_certificate(self, *, only_if_renewed: bool = False) -> bool:
        """Makes the running broker read its renewed keystore (devstack/kafka_renewal.py);
        returns whether it asked. ``only_if_renewed``: only if it presents another one."""
        if only_if_renewed:
            try:
                files = load_certificate(cert_file(self.tls_dir, KAFKA)).serial_number
                served = served_serial(HOST, self.profile.ports.kafka_broker, self.tls_dir)
            except (OSError, ValueError):
                return False
            if served == files:
                return False
        run_coro(reload_keystore(self.endpoint, self.tls_dir))
        log.info("kafka: the broker reloaded its certificate")
        return True

    def reset_topics(self) -> None:
        """Deletes and re-creates the saga's topics: every record and committed offset goes.

        The e2e tests use it so that each fresh system (fresh databases) also starts with
        empty topics; otherwise a replay from offset 0 would bring in a previous system's
        events, which the fresh databases have never seen.
        """
        run_coro(self._delete_topics())
        self.provision()

    async def _delete_topics(self) -> None:
        admin = self._admin()
        try:
            await admin.start()
            present = [t for t in TOPICS if t in set(await admin.list_topics())]
            if present:
                await admin.delete_topics(present, timeout_ms=30000)
            deadline = time.monotonic() + 30
            while set(present) & set(await admin.list_topics()):
                if time.monotonic() > deadline:
                    raise StackError(f"kafka: topics not deleted after 30s: {present}")
                await asyncio.sleep(0.2)
        finally:
            with contextlib.suppress(Exception):
                await admin.close()


def _java_env() -> dict[str, str]:
    # These would inject the caller's JVM flags (agents, huge heaps) into our broker.
    skip = {"JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "JDK_JAVA_OPTIONS", "CLASSPATH"}
    return {k: v for k, v in os.environ.items() if k not in skip}
