"""Calling other services through discovery: no peer address is configured.

``ServiceClients.call`` picks an instance round-robin from the directory and makes
the call under three guards, all read from the config center once per call
(``config.current``; fixed defaults without one):

- **a deadline budget** (shared/rpc/deadlines.py): the call gets ``min(timeout,
  what is left of the incoming call's deadline - deadlines.margin_ms)`` for all its
  attempts together; a budget already spent is not sent (DEADLINE_EXCEEDED at once);
- **a circuit breaker per target service** (shared/rpc/breaker.py): while it is
  open, calls fail at once with UNAVAILABLE ("circuit open for product; retry in
  N s") without touching the network;
- **retries** (shared/rpc/retry.py): UNAVAILABLE always, DEADLINE_EXCEEDED only for
  calls marked ``idempotent``, nothing else; exponential backoff with jitter, at
  most ``retry.max_attempts``, within the deadline, under a retry budget per target
  service. An instance that answered UNAVAILABLE is ejected for a few seconds (it may
  be dead before etcd has expired its key), so each retry goes to another instance
  when there is one. An idempotent call with a deadline gives each attempt at most
  ``retry.attempt_timeout_ms`` of it: an instance that is frozen rather than dead
  (SIGSTOPped, partitioned) takes calls and answers none, so the attempt is cut
  short, the instance ejected like one that answered UNAVAILABLE, and the call
  tried on another instance while its deadline still has room. A call in flight on an
  instance that leaves the directory (its lease expired) is cancelled with its channel;
  it fails UNAVAILABLE (reason INSTANCE_LEFT) and, if idempotent, is tried elsewhere.
  Why this loop and not gRPC's own retries: shared/rpc/retry.py.

Every channel is mutual TLS, one per instance (shared/rpc/channels.py).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

import grpc

from shared.config.center import ConfigCenter, RuntimeConfig
from shared.config.models import GlobalConfig, ServiceKnobs
from shared.observability.metrics import BREAKER_STATE
from shared.registry.discovery import Instance, ServiceDirectory
from shared.rpc.breaker import CircuitBreaker, Outcome, State, outcome_of
from shared.rpc.channels import ChannelPool
from shared.rpc.deadlines import outbound_deadline
from shared.rpc.retry import BUDGET_FAILURES, RetryBudget, decide
from shared.rpc.status import (
    CIRCUIT_OPEN,
    DEADLINE_BUDGET_SPENT,
    INSTANCE_LEFT,
    local_error,
)
from shared.tls import ClientTLS

log = logging.getLogger(__name__)

StubT = TypeVar("StubT")
ResultT = TypeVar("ResultT")
Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

EJECT_SECONDS = 10.0
# A caller without a config center (tools, tests) gets the models' defaults.
DEFAULT_CONFIG = RuntimeConfig(GlobalConfig(), ServiceKnobs())


def _this_task_is_cancelled() -> bool:
    """Whether a CancelledError is meant for the running task, rather than a gRPC call's
    own (grpc.aio raises CancelledError when a closing channel cancels its calls)."""
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0


def forwarded_credentials(
    context: grpc.aio.ServicerContext,
) -> tuple[tuple[str, str | bytes], ...]:
    """The caller's authorization metadata, to call a peer on the caller's behalf.

    The peer then checks the caller's own token: a service never calls with
    more authority than the user who asked it to.
    """
    return tuple(
        (key, value) for key, value in context.invocation_metadata() or () if key == "authorization"
    )


# shop_breaker_state's values.
BREAKER_LEVELS = {State.CLOSED: 0, State.HALF_OPEN: 1, State.OPEN: 2}


class ServiceClients:
    def __init__(
        self,
        directory: ServiceDirectory,
        tls: ClientTLS,
        *,
        config: ConfigCenter | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._directory = directory
        self._channels = ChannelPool(directory, tls)
        self._config = config
        self._clock = clock
        self._sleep = sleep
        self._rand = rand
        self._breakers: dict[str, CircuitBreaker] = {}
        self._budgets: dict[str, RetryBudget] = {}
        # (service, event) -> count: attempts, retries, circuit_open, budget_spent,
        # retries_throttled; for the metrics to expose.
        self.counters: Counter[tuple[str, str]] = Counter()

    @property
    def directory(self) -> ServiceDirectory:
        return self._directory

    @property
    def tls(self) -> ClientTLS:
        return self._channels.tls

    @property
    def config(self) -> RuntimeConfig:
        """The knobs in force now (read it once per call)."""
        return self._config.current if self._config is not None else DEFAULT_CONFIG

    def breaker(self, service: str) -> CircuitBreaker:
        """The circuit breaker of calls to ``service`` (one for all its instances)."""
        breaker = self._breakers.get(service)
        if breaker is None:
            breaker = self._breakers[service] = CircuitBreaker(service, self._clock)
            # Read at scrape time: an open breaker turns half-open by the clock alone.
            BREAKER_STATE.labels(service).set_function(
                lambda: BREAKER_LEVELS[breaker.state(self.config.breaker)]
            )
        return breaker

    def retry_budget(self, service: str) -> RetryBudget:
        budget = self._budgets.get(service)
        if budget is None:
            budget = self._budgets[service] = RetryBudget()
        return budget

    def channel(self, instance: Instance) -> grpc.aio.Channel:
        return self._channels.channel(instance)

    @overload
    async def call(
        self,
        service: str,
        stub_type: Callable[[grpc.aio.Channel], StubT],
        invoke: Callable[[StubT, float], Awaitable[ResultT]],
        *,
        timeout: float,
        idempotent: bool = False,
    ) -> ResultT: ...

    @overload
    async def call(
        self,
        service: str,
        stub_type: Callable[[grpc.aio.Channel], StubT],
        invoke: Callable[[StubT], Awaitable[ResultT]],
        *,
        timeout: None = None,
        idempotent: bool = False,
    ) -> ResultT: ...

    async def call(
        self,
        service: str,
        stub_type: Callable[[grpc.aio.Channel], StubT],
        invoke: Callable[..., Awaitable[ResultT]],
        *,
        timeout: float | None = None,
        idempotent: bool = False,
    ) -> ResultT:
        """``invoke(stub, timeout)`` on an instance of ``service``, retried as the module says.

        ``timeout``: the call's own deadline in seconds, for all attempts together,
        capped by the incoming call's; each attempt's ``invoke`` gets what is left of it,
        to pass on as the RPC's ``timeout``. Without it, ``invoke(stub)`` sets its own
        timeout, and only the incoming deadline (if any) bounds the attempts.
        ``idempotent``: DEADLINE_EXCEEDED may be retried too (reads; the server may have
        done the work and only the answer was late).
        """
        config = self.config  # once: one consistent view of the knobs for this call
        deadline = outbound_deadline(timeout, config.deadlines.margin_ms, self._clock)
        breaker = self.breaker(service)
        budget = self.retry_budget(service)
        tried: set[str] = set()
        last_error: grpc.aio.AioRpcError | None = None
        attempt = 0
        while True:
            attempt += 1
            remaining = None if deadline is None else deadline - self._clock()
            if remaining is not None and remaining <= 0:
                if last_error is not None:  # the backoff took the last of it
                    raise last_error
                self.counters[(service, "budget_spent")] += 1
                raise local_error(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    DEADLINE_BUDGET_SPENT,
                    f"deadline budget for {service} spent before the call"
                    f" ({-remaining * 1000:.0f} ms over, margin"
                    f" {config.deadlines.margin_ms:g} ms); not sent",
                )
            instance = self._pick(service, tried)
            ticket = breaker.allow(config.breaker)
            if ticket is None:
                if last_error is not None:  # opened by this very call's failures
                    raise last_error
                self.counters[(service, "circuit_open")] += 1
                raise self._circuit_error(service, breaker, config)
            tried.add(instance.address)
            self.counters[(service, "attempts")] += 1
            cut_short = (
                idempotent
                and timeout is not None
                and remaining is not None
                and config.retry.attempt_timeout_ms / 1000 < remaining
            )
            budget_of_attempt = config.retry.attempt_timeout_ms / 1000 if cut_short else remaining
            left_mid_call = False
            try:
                result = await self._attempt(
                    invoke,
                    stub_type(self.channel(instance)),
                    budget_of_attempt,
                    timeout is not None,
                )
            except (grpc.aio.AioRpcError, asyncio.CancelledError) as failure:
                if isinstance(failure, asyncio.CancelledError):
                    if _this_task_is_cancelled():
                        breaker.record(ticket, Outcome.NEUTRAL, config.breaker)
                        raise
                    # Not our cancel: the instance left the directory (its lease expired:
                    # dead or frozen) and its channel was closed under the call.
                    error = local_error(
                        grpc.StatusCode.UNAVAILABLE,
                        INSTANCE_LEFT,
                        f"the {service} instance at {instance.address} left during the call",
                    )
                    left_mid_call = True
                else:
                    error = failure
                code = error.code()
                breaker.record(ticket, outcome_of(code), config.breaker)
                if code in BUDGET_FAILURES:
                    budget.on_failure(config.retry)
                if code == grpc.StatusCode.UNAVAILABLE or (
                    cut_short and code == grpc.StatusCode.DEADLINE_EXCEEDED
                ):
                    self._directory.cache.eject(instance, EJECT_SECONDS)
                left = None if deadline is None else deadline - self._clock()
                decision = decide(
                    code,
                    idempotent=idempotent,
                    attempt=attempt,
                    policy=config.retry,
                    budget=budget,
                    remaining=left,
                    rand=self._rand,
                )
                if left_mid_call and not idempotent:
                    # It may have done the work before it froze: only a call that can be
                    # repeated safely is sent again.
                    raise error from None
                if not decision.retry:
                    if decision.throttled:
                        self.counters[(service, "retries_throttled")] += 1
                    if code in BUDGET_FAILURES:
                        log.info(
                            "%s at %s: %s; not retried: %s",
                            service, instance.address, code.name, decision.why,
                        )  # fmt: skip
                    raise error from None
                log.info(
                    "%s at %s: %s; retry %d in %.0f ms",
                    service, instance.address, code.name, attempt, decision.delay * 1000,
                )  # fmt: skip
                self.counters[(service, "retries")] += 1
                last_error = error
                await self._sleep(decision.delay)
            except BaseException:  # cancelled, or not an RPC outcome: no news of the service
                breaker.record(ticket, Outcome.NEUTRAL, config.breaker)
                raise
            else:
                breaker.record(ticket, Outcome.SUCCESS, config.breaker)
                budget.on_success(config.retry)
                return result

    def _pick(self, service: str, tried: set[str]) -> Instance:
        """Round-robin, but not an instance this call already tried, if there is another."""
        instance = self._directory.pick(service)
        for _ in range(len(self._directory.instances(service))):
            if instance.address not in tried:
                break
            instance = self._directory.pick(service)
        return instance

    async def _attempt(
        self,
        invoke: Callable[..., Awaitable[ResultT]],
        stub: Any,
        remaining: float | None,
        timed: bool,
    ) -> ResultT:
        if timed:
            assert remaining is not None  # a timeout always makes a deadline
            return await invoke(stub, remaining)
        if remaining is None:
            return await invoke(stub)
        # invoke sets its own timeout; the incoming deadline still bounds it.
        try:
            async with asyncio.timeout(remaining):
                return await invoke(stub)
        except TimeoutError:
            raise local_error(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                DEADLINE_BUDGET_SPENT,
                "the incoming call's deadline budget ran out",
            ) from None

    def _circuit_error(
        self, service: str, breaker: CircuitBreaker, config: RuntimeConfig
    ) -> grpc.aio.AioRpcError:
        if breaker.state(config.breaker) is State.HALF_OPEN:
            details = (
                f"circuit half-open for {service}: its {config.breaker.half_open_trials}"
                " trial calls are in flight; retry shortly"
            )
        else:
            details = (
                f"circuit open for {service}; retry in {breaker.retry_in(config.breaker):.1f} s"
            )
        return local_error(grpc.StatusCode.UNAVAILABLE, CIRCUIT_OPEN, details)

    async def close(self) -> None:
        await self._channels.close()
