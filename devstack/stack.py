"""The whole local stack of one profile, as a synchronous API for the CLI, tests and run scripts."""

from __future__ import annotations

import contextlib
import logging
import shutil
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeVar

from devstack.component import Component
from devstack.config import get_profile
from devstack.etcd import Etcd
from devstack.install import ensure_all
from devstack.kafka import Kafka
from devstack.postgres import Postgres
from devstack.process import StackError, file_lock
from devstack.prometheus import Prometheus
from devstack.zipkin import Zipkin
from pki.authority import ensure_authority
from shared.messaging.kafka import KafkaIdentity
from shared.tls import ClientTLS

log = logging.getLogger("devstack")
T = TypeVar("T")

COMPONENTS: Final = ("postgres", "etcd", "kafka", "zipkin", "prometheus")
# bench-plain's (no Prometheus: its targets bridge reads etcd over TLS only).
PLAINTEXT_COMPONENTS: Final = ("postgres", "etcd", "kafka", "zipkin")
_LOCK_NAME: Final = ".devstack.lock"


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    pid: int | None
    endpoint: str
    up: bool


class Stack:
    """PostgreSQL + etcd + Kafka, with Zipkin and Prometheus, for one profile ("dev", "test", ...).

    Every method is safe to repeat and to call while another process uses the same profile:
    mutating calls take a per-profile file lock.
    """

    def __init__(self, profile: str = "dev") -> None:
        self.profile = get_profile(profile)
        self.postgres = Postgres(self.profile)
        self.etcd = Etcd(self.profile)
        self.kafka = Kafka(self.profile)
        self.zipkin = Zipkin(self.profile)
        self.prometheus = Prometheus(self.profile)
        self._components: dict[str, Component] = {
            "postgres": self.postgres,
            "etcd": self.etcd,
            "kafka": self.kafka,
            "zipkin": self.zipkin,
            "prometheus": self.prometheus,
        }
        self._lock_depth = 0
        self._lock_mutex = threading.RLock()

    # --- endpoints ------------------------------------------------------------------------------

    @property
    def profile_dir(self) -> Path:
        return self.profile.dir

    def pg_dsn(self, db: str) -> str:
        """The administrator's DSN (TLS, password): tests and tools, never a service."""
        return self.postgres.dsn(db)

    def pg_service_dsn(self, service: str, db: str | None = None) -> str:
        """The service's own role, into its own database unless ``db`` says otherwise."""
        return self.postgres.service_dsn(service, db)

    @property
    def pg_dsn_base(self) -> str:
        return self.postgres.dsn_base

    @property
    def etcd_endpoint(self) -> str:
        return self.etcd.endpoint

    @property
    def kafka_bootstrap(self) -> str:
        return self.kafka.endpoint

    @property
    def tls_dir(self) -> Path:
        """The profile's CA and every party's certificate (see pki/)."""
        return self.profile_dir / "tls"

    @property
    def infra_tls(self) -> bool:
        """etcd, Kafka and PostgreSQL with TLS and auth: all but bench-plain (config.py)."""
        return self.profile.infra_tls

    def etcd_operator(self) -> ClientTLS | None:
        """How the operator's etcd clients connect: its certificate, or plaintext (None)
        on bench-plain."""
        return ClientTLS.operator(self.tls_dir) if self.infra_tls else None

    def kafka_operator(self) -> KafkaIdentity:
        return KafkaIdentity.operator(self.tls_dir, plaintext=not self.infra_tls)

    def env(self) -> dict[str, str]:
        return {
            "SHOP_ETCD_ENDPOINT": self.etcd_endpoint,
            "SHOP_PG_DSN_BASE": self.pg_dsn_base,
            "SHOP_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "SHOP_TRACE_ENDPOINT": self.zipkin.spans_url,
        }

    # --- lifecycle ------------------------------------------------------------------------------

    def component(self, name: str) -> Component:
        try:
            return self._components[name]
        except KeyError:
            raise ValueError(
                f"unknown component {name!r} (known: {', '.join(COMPONENTS)})"
            ) from None

    def install(self) -> None:
        ensure_all()

    def up(self, components: tuple[str, ...] | None = None) -> bool:
        """Start whatever is not running, wait until all is usable, create databases and topics.

        ``components``: only these (default: all the profile runs). Returns whether
        anything had to be started.
        """
        if components is None:
            components = COMPONENTS if self.infra_tls else PLAINTEXT_COMPONENTS
        with self._locked():
            self.install()
            # Every entry point that starts a stack (make run, tests, bench, load, fuzz)
            # comes through here, so every profile has its CA and certificates.
            ensure_authority(self.tls_dir)
            # In parallel: the Kafka JVM dominates, the others finish while it boots (Prometheus'
            # targets bridge retries until etcd answers, so it needs no ordering either).
            started = self._each(components, lambda c: c.start())
            return any(started)

    def down(self) -> bool:
        """Stop everything; returns whether anything was running."""
        with self._locked():
            return any(self._each(COMPONENTS, lambda c: c.stop()))

    def start(self, component: str) -> bool:
        with self._locked():
            return self.component(component).start()

    def stop(self, component: str) -> bool:
        with self._locked():
            return self.component(component).stop()

    def kill(self, component: str) -> bool:
        with self._locked():
            return self.component(component).kill()

    def is_up(self, component: str) -> bool:
        return self.component(component).is_up()

    def status(self) -> list[ComponentStatus]:
        return [
            ComponentStatus(name, c.pid(), c.endpoint, c.is_up())
            for name, c in self._components.items()
        ]

    def reset(self) -> None:
        """Stop and wipe this profile's data (the shared Kafka and Zipkin jar caches are kept)."""
        with self._locked():
            self.down()
            if self.profile_dir.is_dir():
                for child in self.profile_dir.iterdir():
                    if child.name == _LOCK_NAME:  # still held by us
                        continue
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child)
                    else:
                        child.unlink()
            log.info("wiped %s", self.profile_dir)

    # --- helpers --------------------------------------------------------------------------------

    def _each(self, names: tuple[str, ...], op: Callable[[Component], T]) -> list[T]:
        comps = [self._components[n] for n in names]
        with ThreadPoolExecutor(len(comps), thread_name_prefix="devstack") as pool:
            futures = [pool.submit(op, c) for c in comps]
        errors = []
        results: list[T] = []
        for comp, fut in zip(comps, futures, strict=True):
            exc = fut.exception()
            if exc is None:
                results.append(fut.result())
            elif isinstance(exc, StackError):
                errors.append(f"{comp.name}: {exc}")
            else:
                raise exc
        if errors:
            raise StackError("\n".join(errors))
        return results

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # RLock: serialises threads sharing this Stack, while letting reset() call down().
        with self._lock_mutex:
            outer = self._lock_depth == 0
            self._lock_depth += 1
            try:
                if outer:
                    with file_lock(self.profile_dir / _LOCK_NAME):
                        yield
                else:
                    yield
            finally:
                self._lock_depth -= 1
