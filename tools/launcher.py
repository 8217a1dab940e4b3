"""Starts the five services as child processes and waits until they are ready.

Used by `make run` (fixed ports, one instance each, dev stack) and by the e2e
tests (free ports, any number of instances, test stack). Ready means: every
instance is registered in etcd AND answers SERVING on the gRPC health protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from devstack.stack import Stack
from shared.registry.discovery import Instance, ServiceDirectory
from shared.registry.etcd import etcd_client
from shared.tls import ClientTLS
from tools.image import ContainerRun

REPO_ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("user", "product", "inventory", "payment", "order")
# Fixed ports for `make run`, so grpcurl commands in the README work as printed.
DEV_PORTS = {"user": 50051, "product": 50052, "inventory": 50053, "payment": 50054, "order": 50055}


@dataclass
class ServiceProcess:
    service: str
    instance_id: str
    process: asyncio.subprocess.Process
    reader: asyncio.Task[None] | None = None


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
    processes: list[ServiceProcess] = field(default_factory=list)

    def env_for(self, service: str, instance_id: str, port: int) -> dict[str, str]:
        prefix = f"SHOP_{service.upper()}_"
        tls_dir, jwt_dir = (
            (self.container.TLS_DIR, self.container.JWT_DIR)
            if self.container
            else (str(self.stack.tls_dir), str(self.jwt_dir))
        )
        env = {
            f"{prefix}INSTANCE_ID": instance_id,
            f"{prefix}PORT": str(port),
            f"{prefix}ETCD_ENDPOINT": self.stack.etcd_endpoint,
            f"{prefix}KAFKA_BOOTSTRAP": self.stack.kafka_bootstrap,
            f"{prefix}PG_DSN": self.stack.pg_dsn(f"shop_{service}"),
            f"{prefix}TLS_DIR": tls_dir,
            f"{prefix}REGISTRY_TTL_SECONDS": str(self.registry_ttl_seconds),
            "PYTHONUNBUFFERED": "1",
        }
        if service == "user":
            env[f"{prefix}JWT_PRIVATE_KEY_FILE"] = f"{jwt_dir}/private.pem"
        env.update(self.extra_env)
        return env

    async def start_instance(self, service: str, index: int = 0) -> ServiceProcess:
        instance_id = f"{service}-{index + 1}-{os.urandom(2).hex()}"
        port = DEV_PORTS[service] + 100 * index if self.fixed_ports else 0
        env = self.env_for(service, instance_id, port)
        command = ["-m", f"services.{service}.main", "serve"]
        if self.container:
            argv = self.container.argv(instance_id, env, ["python", *command])
            env = self.container.engine.env
        else:
            argv = [sys.executable, *command]
            env = {**os.environ, **env}
        process = await asyncio.create_subprocess_exec(
            *argv,
            cwd=REPO_ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us only; we stop children in order
        )
        child = ServiceProcess(service, instance_id, process)
        child.reader = asyncio.create_task(self._pump(child))
        self.processes.append(child)
        return child

    async def _pump(self, child: ServiceProcess) -> None:
        assert child.process.stdout is not None
        tag = f"{child.service:<9}|"
        async for line in child.process.stdout:
            self.log_sink(f"{tag} {line.decode(errors='replace').rstrip()}")
        code = await child.process.wait()
        self.log_sink(f"{tag} [{child.instance_id} exited with code {code}]")

    async def start_all(self) -> None:
        for service in SERVICES:
            for index in range(self.replicas.get(service, 1)):
                await self.start_instance(service, index)

    def expected(self) -> dict[str, set[str]]:
        live = [p for p in self.processes if p.process.returncode is None]
        return {s: {p.instance_id for p in live if p.service == s} for s in SERVICES}

    async def wait_ready(self, directory: ServiceDirectory, timeout: float = 60.0) -> None:
        """Every started instance registered and SERVING, or TimeoutError naming the laggards."""
        expected = self.expected()
        operator = ClientTLS.operator(self.stack.tls_dir)
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            missing = []
            for service, ids in expected.items():
                registered = {i.instance_id: i for i in directory.instances(service)}
                for instance_id in ids:
                    instance = registered.get(instance_id)
                    if instance is None or not await is_serving(instance, operator):
                        missing.append(instance_id)
            if not missing:
                return
            dead = [p.instance_id for p in self.processes if p.process.returncode is not None]
            if dead:
                raise RuntimeError(f"instances exited during start-up: {', '.join(dead)}")
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"not ready after {timeout}s: {', '.join(missing)}")
            await asyncio.sleep(0.2)

    async def stop_all(self, grace: float = 10.0) -> None:
        """SIGTERM (services revoke their lease, then drain), SIGKILL after ``grace``."""
        for child in self.processes:
            if child.process.returncode is None:
                child.process.send_signal(signal.SIGTERM)
        for child in self.processes:
            try:
                await asyncio.wait_for(child.process.wait(), grace)
            except TimeoutError:
                child.process.kill()
                await child.process.wait()
                if self.container:
                    await asyncio.to_thread(self.container.remove, child.instance_id)
            if child.reader is not None:
                with contextlib.suppress(Exception):
                    await child.reader
        self.processes.clear()


async def recreate_database(stack: Stack, name: str) -> str:
    """A fresh, empty database ``name``; returns its DSN."""
    admin = await asyncpg.connect(stack.pg_dsn("postgres"))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return stack.pg_dsn(name)


async def wipe_system_data(stack: Stack) -> None:
    """Empty databases for every service and empty saga topics: a system from scratch.

    The topics go too, or a replay from offset 0 would bring a previous system's
    events into databases that never saw them.
    """
    for service in SERVICES:
        await recreate_database(stack, f"shop_{service}")
    await asyncio.to_thread(stack.kafka.reset_topics)


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
    client = etcd_client(stack.etcd_endpoint)
    directory = ServiceDirectory(client)
    await directory.start()
    try:
        yield directory
    finally:
        await directory.stop()
        await client.close()
