"""The config center, as one instance sees it: watch, validate, swap in one assignment.

Every instance follows ``/config/global`` and ``/config/<service>`` (one etcd watch on
the ``/config/`` prefix, via KeyRangeFollower, which lists again after a watch error
or a compaction). A valid change becomes a new frozen ``RuntimeConfig``, swapped in by
replacing one reference: a call reads ``center.current`` once and keeps that object,
so it never sees half an update. An invalid document is refused and logged, and the
last good one of that scope stays in force. Each instance reports the revisions it
applied at ``/config-status/<service>/<instance>``, under its registry lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aetcd
from aetcd import rtypes
from pydantic import ValidationError

from shared.config.models import (
    BreakerPolicy,
    DeadlinePolicy,
    Faults,
    GlobalConfig,
    Knobs,
    LogLevel,
    RateLimits,
    RetryPolicy,
    ServiceKnobs,
    Tracing,
    validate_document,
)
from shared.registry.watch import KeyRangeFollower, prefix_range

log = logging.getLogger(__name__)

CONFIG_PREFIX = "/config/"
STATUS_PREFIX = "/config-status/"


def config_key(scope: str) -> str:
    return f"{CONFIG_PREFIX}{scope}"


def status_key(service: str, instance_id: str) -> str:
    return f"{STATUS_PREFIX}{service}/{instance_id}"


@dataclass(frozen=True)
class RuntimeConfig:
    """One consistent view of every knob; never changed, only replaced."""

    common: GlobalConfig
    service: ServiceKnobs
    # scope -> the etcd mod_revision of the document in force (0: none, the defaults)
    revisions: Mapping[str, int] = field(default_factory=dict)

    @property
    def log_level(self) -> LogLevel | None:
        return self.service.log_level or self.common.log_level

    @property
    def rate_limits(self) -> RateLimits:
        return self.service.rate_limits or self.common.rate_limits

    @property
    def faults(self) -> Faults:
        return self.service.faults or self.common.faults

    @property
    def tracing(self) -> Tracing:
        return self.service.tracing or self.common.tracing

    @property
    def breaker(self) -> BreakerPolicy:
        return self.common.breaker

    @property
    def retry(self) -> RetryPolicy:
        return self.common.retry

    @property
    def deadlines(self) -> DeadlinePolicy:
        return self.common.deadlines


Listener = Callable[[RuntimeConfig], None]


class ConfigCenter:
    """``current`` is the config in force; ``listeners`` hear of every swap."""

    def __init__(
        self,
        service: str,
        defaults: Mapping[str, Any] | None = None,
        *,
        knobs: type[ServiceKnobs] = ServiceKnobs,
    ) -> None:
        self.service = service
        # The model of the service's own document, which the service declares.
        self._knobs = knobs
        # The environment's values for knobs that also have a setting (see models.py).
        self._defaults = dict(defaults or {})
        self._good: dict[str, tuple[Knobs, int]] = {
            "global": (GlobalConfig(), 0),
            service: (validate_document(knobs, {}, self._defaults), 0),
        }
        self.refused: dict[str, int] = {}  # scope -> revision of a document refused
        self.listeners: list[Listener] = []
        self.current = self._compose()
        self._follower: KeyRangeFollower | None = None

    @classmethod
    def fixed(
        cls, service: str, common: GlobalConfig | None = None, knobs: ServiceKnobs | None = None
    ) -> ConfigCenter:
        """A center that never watches: for unit tests and in-process tools."""
        center = cls(service, knobs=type(knobs) if knobs is not None else ServiceKnobs)
        if common is not None:
            center._good["global"] = (common, 0)
        if knobs is not None:
            center._good[service] = (knobs, 0)
        center.current = center._compose()
        return center

    def _compose(self) -> RuntimeConfig:
        common, global_rev = self._good["global"]
        knobs, service_rev = self._good[self.service]
        assert isinstance(common, GlobalConfig) and isinstance(knobs, ServiceKnobs)
        return RuntimeConfig(common, knobs, {"global": global_rev, self.service: service_rev})

    # --- following etcd -------------------------------------------------------------------

    async def start(self, client: aetcd.Client, wait_seconds: float = 2.0) -> None:
        """Follows etcd; waits up to ``wait_seconds`` for the first listing (an absent
        document is not waited for: it means the defaults)."""
        self._follower = KeyRangeFollower(
            client,
            prefix_range(CONFIG_PREFIX.encode()),
            name=f"config watch ({self.service})",
            on_listing=self._on_listing,
            on_event=self._on_event,
        )
        self._follower.start()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_seconds):
                await self._follower.listed.wait()

    async def stop(self) -> None:
        if self._follower is not None:
            await self._follower.stop()

    def _scope_of(self, key: bytes) -> str | None:
        scope = key.decode(errors="replace").removeprefix(CONFIG_PREFIX)
        return scope if scope in ("global", self.service) else None

    async def _on_listing(self, listing: rtypes.GetRange) -> None:
        seen = {}
        for kv in listing:
            scope = self._scope_of(bytes(kv.key))
            if scope is not None:
                seen[scope] = (bytes(kv.value), kv.mod_revision)
        changed = False
        for scope in ("global", self.service):
            raw, revision = seen.get(scope, (None, 0))
            changed |= self._accept(scope, raw, revision)
        if changed:
            self._swap()

    async def _on_event(self, event: rtypes.Event) -> None:
        scope = self._scope_of(bytes(event.kv.key))
        if scope is None:
            return
        if event.kind == rtypes.EventKind.PUT:
            changed = self._accept(scope, bytes(event.kv.value), event.kv.mod_revision)
        else:  # deleted: back to the defaults
            changed = self._accept(scope, None, event.kv.mod_revision)
        if changed:
            self._swap()

    def _accept(self, scope: str, raw: bytes | None, revision: int) -> bool:
        """Validates one document; True if it replaced the one in force."""
        if revision and self._good[scope][1] == revision:
            return False  # a re-listing of what we already have
        try:
            document = {} if raw is None else json.loads(raw)
            if scope == self.service:
                knobs: Knobs = validate_document(self._knobs, document, self._defaults)
            else:
                knobs = validate_document(GlobalConfig, document)
        except (ValueError, ValidationError) as error:
            # Stale beats wrong: the last good document of this scope stays in force.
            self.refused[scope] = revision
            log.error(
                "refused %s at revision %d (keeping revision %d): %s",
                config_key(scope), revision, self._good[scope][1], one_line(error),
            )  # fmt: skip
            return False
        self._good[scope] = (knobs, revision if raw is not None else 0)
        self.refused.pop(scope, None)
        return True

    def _swap(self) -> None:
        self.current = self._compose()  # the one assignment every reader sees whole
        log.info("config applied: %s", format_revisions(self.current.revisions))
        for listener in list(self.listeners):
            try:
                listener(self.current)
            except Exception:  # one bad listener must not stop the others
                log.exception("config listener %r failed", listener)


def one_line(error: Exception) -> str:
    if isinstance(error, ValidationError):
        return "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'document'}: {e['msg']}" for e in error.errors()
        )
    return str(error)


def format_revisions(revisions: Mapping[str, int]) -> str:
    return ", ".join(f"{scope}@{rev}" for scope, rev in revisions.items())


# --- status: which revision each instance applied ---------------------------------------------


def status_document(center: ConfigCenter) -> bytes:
    return json.dumps(
        {
            "revisions": dict(center.current.revisions),
            "refused": dict(center.refused),
            "applied_at": time.time(),
        }
    ).encode()


async def publish_status(
    client: aetcd.Client, center: ConfigCenter, instance_id: str, lease: aetcd.Lease | None
) -> None:
    """Under the instance's registry lease, so the status goes when the instance goes."""
    await client.put(
        status_key(center.service, instance_id).encode(), status_document(center), lease=lease
    )
