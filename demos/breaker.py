"""`make demo-breaker`: the order service's circuit breaker for product, against `make run`.

1. an order priced live (the order service also remembers the prices it saw);
2. the product process is stopped (SIGSTOP): it still holds its connections and its
   etcd key (until its lease expires) but answers nothing, the worst kind of outage;
3. orders, one after another: the first ones wait out the catalog's deadline, until
   the breaker in the order service opens and they fail at once;
4. /config/order ``{"degradation": {"enabled": true}}``: orders go through again,
   priced from the last known prices (``priced_from_cache`` on the order);
5. the product process resumes (SIGCONT): once the breaker's ``open_seconds`` are
   over, its trial calls succeed (half-open), and after ``half_open_trials`` of them
   orders are priced live again (closed).

The breaker lives inside the order process, so its state is read off what callers
see: a drop in latency is the breaker opening, the first order priced live after that
is a trial call that succeeded (half-open), and ``half_open_trials`` of them in a row
mean it closed again. This process calls the order service with retries off and a
breaker that never opens, so each order placed is exactly one call of order's.
/config/order is restored at the end, and the product process resumed, whatever
happened. About ten orders of DEMO-MUG are placed as the demo customer (the saga then
runs them as any other).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

import aetcd
import grpc

from demos.session import DemoResult, on_make_run
from ops.config_admin import SCOPES
from ops.config_patch import patched_config
from ops.seed import CUSTOMER
from ops.shop_client import ShopClient
from shared.config import store
from shared.config.center import ConfigCenter
from shared.config.models import BreakerPolicy, GlobalConfig, RetryPolicy
from shared.registry.discovery import ServiceDirectory
from shared.rpc.client import ServiceClients
from shared.tls import ClientTLS
from shop.order.v1 import order_pb2

# The catalog lookup's deadline while product is stopped: short, so the demo is too.
PRODUCT_DEADLINE_SECONDS = 0.3
# Fast failures to measure once the breaker is open.
FAST_SAMPLES = 20
DEGRADED_ORDERS = 5
SKU = "DEMO-MUG"


@dataclass
class Placed:
    seconds: float
    order: order_pb2.Order | None = None
    error: grpc.aio.AioRpcError | None = None

    @property
    def live(self) -> bool:
        """Priced by the product service itself, not from the order's memory."""
        return self.order is not None and not self.order.priced_from_cache

    @property
    def degraded(self) -> bool:
        return self.order is not None and self.order.priced_from_cache


@dataclass
class Observed:
    slow_failures: int = 0
    fast_ms: list[float] = field(default_factory=list)
    degraded: int = 0
    half_open_after: float | None = None
    closed_after: float | None = None


def say(message: str) -> None:
    print(message, flush=True)


def p95(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)] if ordered else float("nan")


def signal_all(pids: Sequence[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


async def place(customer: ShopClient, product_id: str) -> Placed:
    started = time.perf_counter()
    try:
        order = await customer.place_order([(product_id, 1)], str(uuid.uuid4()))
        return Placed(time.perf_counter() - started, order=order)
    except grpc.aio.AioRpcError as error:
        return Placed(time.perf_counter() - started, error=error)


def one_line(placed: Placed) -> str:
    ms = f"{placed.seconds * 1000:7.1f} ms"
    if placed.order is not None:
        how = "priced from the cache" if placed.order.priced_from_cache else "priced live"
        return f"{ms}  placed, {how}"
    assert placed.error is not None
    return f"{ms}  {placed.error.code().name}: {placed.error.details()}"


async def run_demo(
    client: aetcd.Client,
    directory: ServiceDirectory,
    tls: ClientTLS,
    product_pids: Sequence[int],
    *,
    recovery_timeout: float = 60.0,
) -> DemoResult:
    policy = GlobalConfig.model_validate(
        (await store.read(client, SCOPES, "global")).document
    ).breaker
    say(
        f"   breaker (from /config/global): opens after {policy.failure_threshold} failures,"
        f" stays open {policy.open_seconds:g} s, closes after {policy.half_open_trials}"
        " successful trials"
    )
    # One call of order's per order placed: no retries here, and no breaker of our own.
    config = ConfigCenter.fixed(
        "order",
        GlobalConfig(
            retry=RetryPolicy(max_attempts=1), breaker=BreakerPolicy(failure_threshold=1000)
        ),
    )
    clients = ServiceClients(directory, tls, config=config)
    seen = Observed()
    stopped = False
    try:
        customer = ShopClient(clients)
        await customer.login(*CUSTOMER)
        products = {p.sku: p.product_id for p in await customer.all_products()}
        if SKU not in products:
            return DemoResult(False, f"demo-breaker: FAILED: no product {SKU} (seed the demo)")
        product_id = products[SKU]
        async with patched_config(client, "order", "demo-breaker", say=say) as patch:
            await patch.set(
                {
                    "product_deadline_seconds": PRODUCT_DEADLINE_SECONDS,
                    "degradation": {"enabled": False},
                }
            )
            say(
                f"1. /config/order: product_deadline_seconds {PRODUCT_DEADLINE_SECONDS:g},"
                " degradation off"
            )
            first = await place(customer, product_id)
            say(f"   {one_line(first)}")
            if not first.live:
                return DemoResult(False, "demo-breaker: FAILED: the first order was not placed")

            say(f"2. SIGSTOP product (pid {', '.join(map(str, product_pids))})")
            signal_all(product_pids, signal.SIGSTOP)
            stopped = True

            say("3. orders while product answers nothing")
            slow_at_least = PRODUCT_DEADLINE_SECONDS * 0.8
            cap = policy.failure_threshold * 3 + FAST_SAMPLES
            for _ in range(cap):
                placed = await place(customer, product_id)
                if placed.seconds >= slow_at_least:
                    if seen.fast_ms:
                        break  # open_seconds over: a trial call waited it out again
                    seen.slow_failures += 1
                    say(f"   {one_line(placed)}")
                else:
                    if not seen.fast_ms:
                        say(f"   {one_line(placed)}")
                        say(f"   ^ open after {seen.slow_failures} failures (latency drop)")
                    seen.fast_ms.append(placed.seconds * 1000)
                    if len(seen.fast_ms) >= FAST_SAMPLES:
                        break
            if seen.fast_ms:
                say(f"   {len(seen.fast_ms)} fast failures, p95 {p95(seen.fast_ms):.1f} ms")
            else:
                say("   no latency drop: the breaker did not open")

            say("4. /config/order: degradation on")
            await patch.set({"degradation": {"enabled": True}})
            for _ in range(DEGRADED_ORDERS):
                placed = await place(customer, product_id)
                seen.degraded += placed.degraded
                say(f"   {one_line(placed)}")

            # Off again first: while it is open, orders then fail at once (and cost the
            # customer nothing) instead of going through from the cache.
            say("5. /config/order: degradation off; SIGCONT product; orders until priced live")
            await patch.set({"degradation": {"enabled": False}})
            signal_all(product_pids, signal.SIGCONT)
            stopped = False
            resumed = time.monotonic()
            live_in_a_row = 0
            while time.monotonic() - resumed < recovery_timeout:
                placed = await place(customer, product_id)
                if placed.live:
                    live_in_a_row += 1
                    after = time.monotonic() - resumed
                    if seen.half_open_after is None:
                        seen.half_open_after = after
                        say(f"   {one_line(placed)}")
                        say(f"   ^ half-open: a trial call succeeded after {after:.1f} s")
                    if live_in_a_row >= policy.half_open_trials:
                        seen.closed_after = after
                        say(f"   ^ closed: {live_in_a_row} trials succeeded after {after:.1f} s")
                        break
                else:
                    live_in_a_row = 0
                    await asyncio.sleep(0.1)
            if seen.closed_after is None:
                say(f"   not priced live within {recovery_timeout:g} s")
    finally:
        if stopped:
            signal_all(product_pids, signal.SIGCONT)
        await clients.close()
    ok = (
        seen.slow_failures > 0
        and len(seen.fast_ms) > 0
        and seen.degraded > 0
        and seen.closed_after is not None
        and patch.restored
    )
    closed = "never" if seen.closed_after is None else f"{seen.closed_after:.1f} s"
    summary = (
        f"demo-breaker: open after {seen.slow_failures} failures, fast-fail p95"
        f" {p95(seen.fast_ms):.1f} ms, degraded orders {seen.degraded}, closed again after"
        f" {closed}"
    )
    if not patch.restored:
        summary += " (config NOT restored)"
    return DemoResult(ok, summary)


def product_pids() -> list[int]:
    """The `make run` product processes (`python -m services.product.main serve`)."""
    found = subprocess.run(
        ["pgrep", "-f", "services.product.main"], capture_output=True, text=True, check=False
    )
    return [int(p) for p in found.stdout.split() if int(p) != os.getpid()]


async def main() -> int:
    pids = product_pids()
    if not pids:
        say("demo-breaker: no product service running; start the system with `make run`")
        return 2
    return await on_make_run(
        "demo-breaker",
        ["product", "order"],
        lambda client, directory, stack: run_demo(
            client, directory, ClientTLS.operator(stack.tls_dir), pids
        ),
    )


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
