"""Starts the five services as child processes, waits until they are ready, keeps them up;
and the gateway (gateway/) after them, when asked.

Used by `make run` (fixed ports, dev stack, supervised, with the gateway) and by the e2e
tests (free ports, any number of instances, test stack, the gateway only where a test
asks for it). Ready means: every instance is registered in etcd AND answers SERVING on
the gRPC health protocol; the gateway, that it answers 200 on ``/healthz/ready``.

The user service serves the OAuth2 authorization server beside its gRPC port (HTTPS, its
port + 2000 under `make run`); the launcher writes the clients it knows
(ops/oauth_clients.py) to ``.stack/<profile>/oauth/clients.json``, their secrets made
once per stack under ``.stack/<profile>/secrets/oauth/``. The gateway's port is chosen
before anything starts, so its public URL, the storefront's redirect URI in that file
and the tokens' issuer (which is the storefront's origin) agree from the start.

Supervision works like Kubernetes' ``restartPolicy: Always``: an instance that exits
without the launcher asking (a crash, a SIGKILL) is started again after a backoff,
with the same instance id and port, so whatever points at it (the README's grpcurl
lines, the chaos runner) keeps working. The running instances are written to
``.stack/<profile>/instances.json`` (``read_instances``) for tools that signal them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import asyncpg
import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from devstack.containers import ContainerRun
from devstack.stack import Stack
from ops.oauth_clients import STOREFRONT, secret_file, write_clients_file
from ops.trust.postgres_roles import ensure_database
from ops.trust.rights import PG_ROLES, pg_database, pg_role
from shared.registry.discovery import Instance, ServiceDirectory
from shared.registry.etcd import etcd_client
from shared.settings import DEFAULT_ISSUER
from shared.tls import GATEWAY, ClientTLS, ca_file

REPO_ROOT = Path(__file__).resolve().parent.parent
# The five gRPC services. The gateway is no service: it is started after them, and only
# when the launcher is asked to (``gateway=True``).
SERVICES = ("user", "product", "inventory", "payment", "order")
# Fixed ports for `make run`, so grpcurl commands in the README work as printed;
# replica i of a service listens on its port + 100 * i.
DEV_PORTS = {"user": 50051, "product": 50052, "inventory": 50053, "payment": 50054, "order": 50055}
REPLICA_PORT_STEP = 100
# And its metrics port is its gRPC port + 1000 (51051 ...), so its /metrics URL is fixed too.
METRICS_PORT_OFFSET = 1000
# The user service's OAuth2 port (HTTPS): its gRPC port + 2000 (52051, 52151 ...).
OAUTH_PORT_OFFSET = 2000
# The storefront under `make run`: http://localhost:8080/, the default issuer's origin
# (shared/settings.py); its metrics on 9080, + 1000 as the services'.
DEV_GATEWAY_PORT = 8080
# What the gateway answers 200 to once it can serve (liveness is /healthz/live).
GATEWAY_READY_PATH = "/healthz/ready"
STATE_FILE = "instances.json"
# A supervised instance that exits this often while wait_ready waits is crash-looping:
# start-up fails at once instead of waiting out the timeout.
CRASH_LOOP_EXITS = 3


@dataclass
class RestartBackoff:
    """CrashLoopBackOff scaled to a laptop: 0.5 s doubling to 10 s, reset after 10 s up.

    Kubernetes starts at 10 s; a dev loop wants a crash back before the lease TTL
    (5 s) runs out, and the cap keeps a broken service from spinning the CPU.
    """

    initial: float = 0.5
    maximum: float = 10.0
    reset_after: float = 10.0
    last: float = 0.0

    def next_delay(self, uptime: float) -> float:
        if self.last == 0.0 or uptime >= self.reset_after:
            self.last = self.initial
        else:
            self.last = min(self.last * 2, self.maximum)
        return self.last


@dataclass(frozen=True)
class InstanceRecord:
    """One entry of ``instances.json``: enough to find and signal one instance."""

    service: str
    index: int
    instance_id: str
    pid: int
    port: int


@dataclass
class ServiceProcess:
    service: str
    instance_id: str
    process: asyncio.subprocess.Process
    # Pumps the output; when supervised, also restarts the process (see _watch).
    reader: asyncio.Task[None] | None = None
    index: int = 0
    port: int = 0  # 0 until wait_ready learns it from the registration (free ports)
    # The user service's OAuth2 port; kept across restarts, as the port is (0: none).
    http_port: int = 0
    supervised: bool = False
    restarts: int = 0
    exits: int = 0  # exits the launcher did not ask for
    started_at: float = 0.0
    backoff: RestartBackoff = field(default_factory=RestartBackoff)


@dataclass
class SystemLauncher:
    stack: Stack
    jwt_dir: Path
    replicas: Mapping[str, int] = field(default_factory=dict)
    fixed_ports: bool = False
    registry_ttl_seconds: int = 5
    extra_env: Mapping[str, str] = field(default_factory=dict)
    # Where each prefixed log line goes; `make run` prints, tests collect.
    log_sink: Callable[[str], None] = print
    # Instances as containers of the image instead of child processes.
    container: ContainerRun | None = None
    # Restart instances that exit unasked. Off unless asked: several tests kill an
    # instance on purpose and expect it to stay dead; `make run` turns it on.
    supervise: bool = False
    restart_backoff: RestartBackoff = field(default_factory=RestartBackoff)
    # Keep .stack/<profile>/instances.json up to date.
    publish_state: bool = True
    # Spans to the stack's Zipkin and a metrics port per instance; off only for the
    # baseline of the overhead benchmark.
    observe: bool = True
    # Start the gateway too (start_gateway, or start_all): off unless asked, since most
    # tests need only the services; `make run` turns it on.
    gateway: bool = False
    # Its HTTP port: `make run`'s 8080, else one picked now, before anything starts (0).
    gateway_port: int = 0
    processes: list[ServiceProcess] = field(default_factory=list)
    _stopping: asyncio.Event = field(default_factory=asyncio.Event, init=False, repr=False)
    _published: str | None = field(default=None, init=False, repr=False)
    _oauth_written: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.gateway and not self.gateway_port:
            self.gateway_port = DEV_GATEWAY_PORT if self.fixed_ports else free_port()

    # --- the storefront's origin and the OAuth2 clients --------------------------------------

    @property
    def public_url(self) -> str:
        """The storefront's origin: where a browser opens it, where the authorization code
        comes back (``<public_url>/auth/callback``) and the tokens' issuer. Without the
        gateway, the default one (shared/settings.py), which the services expect."""
        return f"http://localhost:{self.gateway_port}" if self.gateway else DEFAULT_ISSUER

    def write_oauth_clients(self) -> Path:
        """The user service's clients file for this stack and this public URL; the secrets
        are made once per stack. A container reads its own copy (see ContainerRun)."""
        path = oauth_clients_file(self.stack)
        write_clients_file(path, self.public_url, oauth_secrets_dir(self.stack))
        if self.container:
            self.container.stage_oauth(oauth_secrets_dir(self.stack), self.public_url)
        self._oauth_written = True
        return path

    def _oauth_paths(self) -> tuple[str, str]:
        """(the clients file, the storefront's secret file) as the process sees them."""
        if self.container:
            return self.container.oauth_paths(STOREFRONT)
        secrets = oauth_secrets_dir(self.stack)
        return str(oauth_clients_file(self.stack)), str(secret_file(secrets, STOREFRONT))

    # --- environment -------------------------------------------------------------------------

    def env_for(
        self, service: str, instance_id: str, port: int, http_port: int = 0
    ) -> dict[str, str]:
        """What an instance of ``service`` (or the gateway) is started with."""
        prefix = f"SHOP_{service.upper()}_"
        tls_dir, jwt_dir = (
            (self.container.TLS_DIR, self.container.JWT_DIR)
            if self.container
            else (str(self.stack.tls_dir), str(self.jwt_dir))
        )
        env = {
            f"{prefix}INSTANCE_ID": instance_id,
            f"{prefix}ETCD_ENDPOINT": self.stack.etcd_endpoint,
            f"{prefix}PG_DSN": self._pg_dsn(service, tls_dir),
            f"{prefix}TLS_DIR": tls_dir,
            f"{prefix}REGISTRY_TTL_SECONDS": str(self.registry_ttl_seconds),
            "PYTHONUNBUFFERED": "1",
        }
        clients_file, storefront_secret = self._oauth_paths()
        if service == GATEWAY:
            # Plain HTTP on loopback: the storefront and the REST API, at its public URL.
            env |= {
                f"{prefix}HOST": "127.0.0.1",
                f"{prefix}HTTP_PORT": str(port),
                f"{prefix}PUBLIC_URL": self.public_url,
                f"{prefix}OAUTH_CLIENT_ID": STOREFRONT,
                f"{prefix}OAUTH_CLIENT_SECRET_FILE": storefront_secret,
            }
        else:
            env[f"{prefix}PORT"] = str(port)
            env[f"{prefix}KAFKA_BOOTSTRAP"] = self.stack.kafka_bootstrap
        if self.gateway:  # the storefront's origin issues the tokens: everyone agrees on it
            env[f"{prefix}JWT_ISSUER"] = self.public_url
        if not self.stack.infra_tls:  # bench-plain: etcd and Kafka in plaintext (settings.py)
            env[f"{prefix}INFRA_TLS"] = "false"
        if service == "user":
            env[f"{prefix}JWT_PRIVATE_KEY_FILE"] = f"{jwt_dir}/private.pem"
            if http_port:
                env[f"{prefix}OAUTH_PORT"] = str(http_port)
            env[f"{prefix}OAUTH_CLIENTS_FILE"] = clients_file
        if self.observe:
            env[f"{prefix}TRACE_ENDPOINT"] = self.stack.zipkin.spans_url
            if self.fixed_ports:
                env[f"{prefix}METRICS_PORT"] = str(metrics_port_for(port))
        else:
            env[f"{prefix}METRICS_ENABLED"] = "false"
        if not self.container:  # JSON lines beside the daemons' logs, one file per instance
            env[f"{prefix}LOG_DIR"] = str(self.stack.profile.logs_dir)
        env.update(self.extra_env)
        return env

    def _pg_dsn(self, service: str, tls_dir: str) -> str:
        dsn = self.stack.pg_service_dsn(service)
        if self.container:  # the CA as the container sees it
            host_ca = quote(str(ca_file(self.stack.tls_dir)))
            dsn = dsn.replace(f"sslrootcert={host_ca}", f"sslrootcert={quote(tls_dir)}/ca.pem")
        return dsn

    def port_for(self, service: str, index: int) -> int:
        if service == GATEWAY:
            return self.gateway_port
        if self.fixed_ports:
            return DEV_PORTS[service] + REPLICA_PORT_STEP * index
        # A restart must come back on the same port, so a supervised instance gets a
        # concrete one up front; otherwise the service picks a free one itself.
        return free_port() if self.supervise else 0

    def http_port_for(self, service: str, index: int) -> int:
        """The user service's OAuth2 port: its gRPC port + 2000 under `make run`, else a
        free one (given, not left to the service: the clients and the gateway find it in
        etcd either way, and a restart comes back on it). Other services have none."""
        if service != "user":
            return 0
        if self.fixed_ports:
            return DEV_PORTS[service] + OAUTH_PORT_OFFSET + REPLICA_PORT_STEP * index
        return free_port()

    async def start_instance(self, service: str, index: int = 0) -> ServiceProcess:
        self._stopping.clear()
        instance_id = f"{service}-{index + 1}-{os.urandom(2).hex()}"
        port = self.port_for(service, index)
        http_port = self.http_port_for(service, index)
        if service in ("user", GATEWAY) and not self._oauth_written:
            self.write_oauth_clients()
        process = await self._spawn(service, instance_id, port, http_port)
        child = ServiceProcess(
            service,
            instance_id,
            process,
            index=index,
            port=port,
            http_port=http_port,
            supervised=self.supervise,
            started_at=asyncio.get_running_loop().time(),
            backoff=dataclasses.replace(self.restart_backoff),
        )
        child.reader = asyncio.create_task(self._watch(child), name=f"watch {instance_id}")
        self.processes.append(child)
        self._publish()
        return child

    async def _spawn(
        self, service: str, instance_id: str, port: int, http_port: int = 0
    ) -> asyncio.subprocess.Process:
        env = self.env_for(service, instance_id, port, http_port)
        command = command_for(service)
        if self.container:
            argv = self.container.argv(instance_id, env, ["python", *command])
            env = self.container.engine.env
        else:
            argv = [sys.executable, *command]
            env = {**os.environ, **env}
        return await asyncio.create_subprocess_exec(
            *argv,
            cwd=REPO_ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us only; we stop children in order
        )

    def release(self, child: ServiceProcess) -> None:
        """Stop supervising ``child``: once it exits, it stays down."""
        child.supervised = False

    def _restarts(self, child: ServiceProcess) -> bool:
        return child.supervised and not self._stopping.is_set() and child in self.processes

    async def _watch(self, child: ServiceProcess) -> None:
        """Streams the output; on an exit nobody asked for, restarts after the backoff."""
        tag = f"{child.service:<9}|"
        loop = asyncio.get_running_loop()
        while True:
            assert child.process.stdout is not None
            async for line in child.process.stdout:
                self.log_sink(f"{tag} {line.decode(errors='replace').rstrip()}")
            how = describe_exit(await child.process.wait())
            self._publish()
            if not self._restarts(child):
                self.log_sink(f"{tag} [{child.instance_id} exited with {how}]")
                return
            child.exits += 1
            uptime = loop.time() - child.started_at
            delay = child.backoff.next_delay(uptime)
            self.log_sink(
                f"{tag} [{child.instance_id} exited with {how} after {uptime:.1f}s up; "
                f"restarting in {delay:g}s]"
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            if not self._restarts(child):
                return
            if self.container:  # a SIGKILLed `podman run` leaves its container behind
                await asyncio.to_thread(self.container.remove, child.instance_id)
            try:
                child.process = await self._spawn(
                    child.service, child.instance_id, child.port, child.http_port
                )
            except OSError as error:
                self.log_sink(f"{tag} [{child.instance_id} could not be restarted: {error}]")
                return
            child.started_at = loop.time()
            child.restarts += 1
            self.log_sink(
                f"{tag} [{child.instance_id} restarted (restart {child.restarts}): "
                f"pid {child.process.pid}, port {child.port or 'free'}]"
            )
            self._publish()
            if self._stopping.is_set():  # stop_all began while it was starting
                child.process.send_signal(signal.SIGTERM)

    async def start_all(self) -> None:
        """Every service's instances, with the clients file written afresh (its redirect URI
        follows this launcher's public URL); then the gateway, if this launcher runs one.
        Its readiness, like theirs, is wait_ready's."""
        self.write_oauth_clients()
        for service in SERVICES:
            for index in range(self.replicas.get(service, 1)):
                await self.start_instance(service, index)
        if self.gateway:
            await self.start_gateway()

    async def start_gateway(self) -> ServiceProcess:
        """The gateway: ``python -m gateway serve`` (it migrates its database first)."""
        if not self.gateway:
            raise ValueError("this launcher runs no gateway: make it with gateway=True")
        if not gateway_available():
            raise GatewayMissing(
                f"there is no gateway here ({GATEWAY_ENTRY_POINT.relative_to(REPO_ROOT)} is"
                " missing): start without it"
            )
        return await self.start_instance(GATEWAY)

    def expected(self) -> dict[str, set[str]]:
        """Instance ids per service (and the gateway) that are up, or will be again."""
        live = [p for p in self.processes if p.process.returncode is None or self._restarts(p)]
        return {s: {p.instance_id for p in live if p.service == s} for s in (*SERVICES, GATEWAY)}

    async def wait_ready(self, directory: ServiceDirectory, timeout: float = 60.0) -> None:
        """Every started instance registered and SERVING, and the gateway answering its
        readiness, or TimeoutError naming the laggards."""
        expected = self.expected()
        by_id = {p.instance_id: p for p in self.processes}
        exits_before = {p.instance_id: p.exits for p in self.processes}
        operator = ClientTLS.operator(self.stack.tls_dir)
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            missing = []
            for service, ids in expected.items():
                if service == GATEWAY:
                    ready = [await gateway_ready(by_id[i].port) for i in ids]
                    missing += [i for i, ok in zip(ids, ready, strict=True) if not ok]
                    continue
                registered = {i.instance_id: i for i in directory.instances(service)}
                for instance_id in ids:
                    instance = registered.get(instance_id)
                    if instance is None or not await is_serving(instance, operator):
                        missing.append(instance_id)
                    else:
                        self._learn_port(by_id[instance_id], instance)
            if not missing:
                self._publish()
                return
            dead = [
                p.instance_id
                for p in self.processes
                if (p.process.returncode is not None and not self._restarts(p))
                or p.exits - exits_before.get(p.instance_id, 0) >= CRASH_LOOP_EXITS
            ]
            if dead:
                raise RuntimeError(f"instances exited during start-up: {', '.join(dead)}")
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"not ready after {timeout}s: {', '.join(missing)}")
            await asyncio.sleep(0.2)

    @staticmethod
    def _learn_port(child: ServiceProcess, instance: Instance) -> None:
        if child.port == 0:
            with contextlib.suppress(ValueError):
                child.port = int(instance.address.rpartition(":")[2])

    async def stop_all(self, grace: float = 10.0) -> None:
        """SIGTERM (services revoke their lease, then drain), SIGKILL after ``grace``.

        Nothing is restarted from here on: the supervisors see ``_stopping`` first.
        """
        self._stopping.set()
        for child in self.processes:
            if child.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    child.process.send_signal(signal.SIGTERM)
        for child in self.processes:
            await self._reap(child, grace)
        self.processes.clear()
        self._unpublish()

    async def _reap(self, child: ServiceProcess, grace: float) -> None:
        try:
            await asyncio.wait_for(child.process.wait(), grace)
        except TimeoutError:
            child.process.kill()
            await child.process.wait()
            if self.container:
                await asyncio.to_thread(self.container.remove, child.instance_id)
        if child.reader is not None:
            # Drains the output; a supervisor in its backoff returns at once, one that
            # was restarting has sent its new process SIGTERM and waits for it.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(child.reader, grace)
        if child.process.returncode is None:
            child.process.kill()
            await child.process.wait()

    # --- the state file ------------------------------------------------------------------

    def _publish(self) -> None:
        if not self.publish_state:
            return
        records = [
            InstanceRecord(p.service, p.index, p.instance_id, p.process.pid, p.port)
            for p in self.processes
            if p.process.returncode is None
        ]
        text = json.dumps([dataclasses.asdict(r) for r in records], indent=1) + "\n"
        write_atomically(instances_path(self.stack), text)
        self._published = text

    def _unpublish(self) -> None:
        # Only our own file: another launcher of this profile may have written since.
        path = instances_path(self.stack)
        with contextlib.suppress(OSError):
            if self._published is not None and path.read_text() == self._published:
                path.unlink()
        self._published = None


async def recreate_database(stack: Stack, name: str) -> str:
    """A fresh, empty database ``name``; returns its DSN.

    A service's (or the gateway's) database (``shop_<party>``) is owned by its role and
    the DSN is that role's, as in a running system; any other is the administrator's.
    """
    service = next((s for s in PG_ROLES if pg_database(s) == name), None)
    admin = await asyncpg.connect(stack.pg_dsn("postgres"))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if service is None:
            await admin.execute(f'CREATE DATABASE "{name}"')
        else:
            await ensure_database(admin, name, pg_role(service))
    finally:
        await admin.close()
    return stack.pg_dsn(name) if service is None else stack.pg_service_dsn(service)


async def wipe_system_data(stack: Stack) -> None:
    """Empty databases for every service (and the gateway) and empty saga topics: a
    system from scratch.

    The topics go too, or a replay from offset 0 would bring a previous system's
    events into databases that never saw them.
    """
    for party in PG_ROLES:
        await recreate_database(stack, pg_database(party))
    await asyncio.to_thread(stack.kafka.reset_topics)


class GatewayMissing(RuntimeError):
    """Asked to start the gateway where its code is not (gateway/__main__.py)."""


GATEWAY_ENTRY_POINT = REPO_ROOT / "gateway" / "__main__.py"


def gateway_available() -> bool:
    """Whether this checkout has the gateway's entry point (``python -m gateway``)."""
    return GATEWAY_ENTRY_POINT.is_file()


def command_for(service: str) -> list[str]:
    """The arguments after ``python``: a service's module, or the gateway's package."""
    if service == GATEWAY:
        return ["-m", "gateway", "serve"]
    return ["-m", f"services.{service}.main", "serve"]


def oauth_clients_file(stack: Stack) -> Path:
    """The user service's OAuth2 clients (ops/oauth_clients.py), as the launcher wrote them."""
    return stack.profile_dir / "oauth" / "clients.json"


def oauth_secrets_dir(stack: Stack) -> Path:
    """One secret per confidential client, made once per stack (like PostgreSQL's passwords)."""
    return stack.profile_dir / "secrets" / "oauth"


def gateway_url(port: int, path: str = "") -> str:
    return f"http://127.0.0.1:{port}{path}"


async def gateway_ready(port: int, timeout: float = 1.0) -> bool:
    """200 on the gateway's readiness path (plain HTTP on loopback)."""
    try:
        async with httpx.AsyncClient(timeout=timeout) as client:
            reply = await client.get(gateway_url(port, GATEWAY_READY_PATH))
    except httpx.HTTPError:
        return False
    return reply.status_code == 200


async def is_serving(instance: Instance, tls: ClientTLS, timeout: float = 1.0) -> bool:
    """SERVING on the health protocol, asked over mTLS as ``tls`` (the operator, usually)."""
    async with tls.channel(instance.address, instance.service) as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout
            )
        except grpc.aio.AioRpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


@contextlib.asynccontextmanager
async def open_directory(stack: Stack) -> AsyncIterator[ServiceDirectory]:
    client = etcd_client(stack.etcd_endpoint, tls=stack.etcd_operator())
    directory = ServiceDirectory(client)
    await directory.start()
    try:
        yield directory
    finally:
        await directory.stop()
        await client.close()


def instances_path(stack: Stack) -> Path:
    return stack.profile_dir / STATE_FILE


def read_instances(stack: Stack) -> list[InstanceRecord]:
    """The instances a running launcher of ``stack``'s profile has up; [] if none runs."""
    path = instances_path(stack)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return parse_instances(text, str(path))


def parse_instances(text: str, where: str = STATE_FILE) -> list[InstanceRecord]:
    """``instances.json``'s text as records, or ValueError saying what is wrong with it."""
    try:
        rows = json.loads(text)
    except ValueError as error:
        raise ValueError(f"{where} is not valid JSON: {error}") from None
    names = [f.name for f in dataclasses.fields(InstanceRecord)]
    if not isinstance(rows, list) or not all(
        isinstance(r, dict) and sorted(r) == sorted(names) for r in rows
    ):
        raise ValueError(f"{where} must be a list of objects with {', '.join(names)}")
    records = []
    for r in rows:
        numbers = [r["index"], r["pid"], r["port"]]
        texts = [r["service"], r["instance_id"]]
        if not all(type(n) is int for n in numbers) or not all(type(t) is str for t in texts):
            raise ValueError(f"{where}: index, pid and port must be integers; the rest text")
        records.append(InstanceRecord(**r))
    return records


def write_atomically(path: Path, text: str) -> None:
    """Readers see the old file or the new one, never half of one (rename is atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def describe_exit(returncode: int) -> str:
    """asyncio's negative return code is the signal that ended the process."""
    if returncode >= 0:
        return f"code {returncode}"
    try:
        return f"signal {signal.Signals(-returncode).name}"
    except ValueError:
        return f"signal {-returncode}"


def metrics_port_for(grpc_port: int) -> int:
    """``make run``'s metrics port for an instance: its gRPC port + 1000, or 0 (a free one,
    registered in etcd as always, where Prometheus finds it) while that port is held. The
    fixed ports lie in Linux's ephemeral range, where any outgoing connection may hold
    one for a while (a Kafka client's once kept payment from starting under make chaos)."""
    port = grpc_port + METRICS_PORT_OFFSET
    return port if bindable(port) else 0


def bindable(port: int) -> bool:
    """Whether a server could listen on ``port`` now (with SO_REUSEADDR, as http.server)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
