"""`make demo-retry`: retries against a flaky product service, against `make run`.

1. /config/product gets ``{"faults": {"unavailable_rate": 0.3}}``: every product
   instance answers UNAVAILABLE to 30 % of calls before its handler runs;
2. N reads (GetProduct) by a client that does not retry (``max_attempts`` 1);
3. the same N reads by a client that retries (up to 4 attempts, backoff with jitter,
   each on another instance when there is one);
4. /config/product is put back, and a read with a bad argument (INVALID_ARGUMENT) is
   tried exactly once: retrying it could only fail the same way again.

Both clients are this process's own ServiceClients with a fixed config, so what they
do is what the demo says, whatever /config/global holds; their breakers are set never
to open (five injected failures in a row are common at 30 %, and the breaker is
`make demo-breaker`'s subject). The retrying client's budget is roomy: gRPC-style
throttling with the default 0.1 token per success turns retries off at a 30 % failure
rate, which is its job (the demo prints how often that would have happened).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

import aetcd
import grpc
import typer

from demos.session import DemoResult, on_make_run
from ops.config_patch import patched_config
from ops.seed import CUSTOMER
from ops.shop_client import ShopClient
from shared.config.center import ConfigCenter
from shared.config.models import BreakerPolicy, GlobalConfig, RetryPolicy
from shared.registry.discovery import ServiceDirectory
from shared.rpc.client import ServiceClients
from shared.tls import ClientTLS
from shop.product.v1 import product_pb2, product_pb2_grpc

FAULT_RATE = 0.3
READS = 200
# Under the default rate limit (100 calls/s per caller and method, bursts of 200).
READS_PER_SECOND = 80.0
DEADLINE = 5.0
NO_BREAKER = BreakerPolicy(failure_threshold=1000)
WITHOUT = RetryPolicy(max_attempts=1)
WITH = RetryPolicy(max_attempts=4, budget_max_tokens=100, budget_token_ratio=1.0)


def say(message: str) -> None:
    print(message, flush=True)


def own_clients(directory: ServiceDirectory, tls: ClientTLS, retry: RetryPolicy) -> ServiceClients:
    # The scope's name does not matter: a client reads only the global knobs.
    config = ConfigCenter.fixed("order", GlobalConfig(retry=retry, breaker=NO_BREAKER))
    return ServiceClients(directory, tls, config=config)


@dataclass
class Reads:
    ok: int = 0
    attempts: int = 0  # calls of the invoke: what reached the network
    codes: Counter[str] = field(default_factory=Counter)

    def rate(self, n: int) -> float:
        return 100.0 * self.ok / n

    def counted(self) -> None:
        self.attempts += 1


def read(
    clients: ServiceClients, token: str, product_id: str, counted: Callable[[], None]
) -> Awaitable[product_pb2.GetProductResponse]:
    metadata = (("authorization", f"Bearer {token}"),)

    def get_product(stub: Any, timeout: float) -> Awaitable[product_pb2.GetProductResponse]:
        counted()
        reply: Awaitable[product_pb2.GetProductResponse] = stub.GetProduct(
            product_pb2.GetProductRequest(product_id=product_id),
            timeout=timeout,
            metadata=metadata,
        )
        return reply

    return clients.call(
        "product",
        product_pb2_grpc.ProductServiceStub,
        get_product,
        timeout=DEADLINE,
        idempotent=True,
    )


async def measure(
    clients: ServiceClients, token: str, product_id: str, n: int, per_second: float
) -> Reads:
    result = Reads()
    started = time.monotonic()
    for i in range(n):
        # Paced, so the rate limit (per caller) is never what fails a read.
        await asyncio.sleep(max(0.0, started + i / per_second - time.monotonic()))
        try:
            await read(clients, token, product_id, result.counted)
            result.ok += 1
        except grpc.aio.AioRpcError as error:
            result.codes[error.code().name] += 1
    return result


async def run_demo(
    client: aetcd.Client,
    directory: ServiceDirectory,
    tls: ClientTLS,
    *,
    reads: int = READS,
    per_second: float = READS_PER_SECOND,
    rate: float = FAULT_RATE,
) -> DemoResult:
    instances = len(directory.instances("product"))
    plain = ServiceClients(directory, tls)
    without = own_clients(directory, tls, WITHOUT)
    with_retries = own_clients(directory, tls, WITH)
    try:
        customer = ShopClient(plain)
        await customer.login(*CUSTOMER)
        products = await customer.all_products()
        if not products:
            return DemoResult(False, "demo-retry: FAILED: no products (is the demo data seeded?)")
        product = next((p for p in products if p.sku == "DEMO-MUG"), products[0])
        say(f"1. {instances} product instance(s); reading {product.sku} ({product.product_id})")
        async with patched_config(client, "product", "demo-retry", say=say) as patch:
            revision = await patch.set({"faults": {"unavailable_rate": rate}})
            say(
                f"   /config/product faults.unavailable_rate = {rate:g} (revision {revision}),"
                " applied by every product instance"
            )
            say(f"2. {reads} reads without retries (max_attempts 1)")
            once = await measure(without, customer.token, product.product_id, reads, per_second)
            say(f"   {once.ok}/{reads} succeeded ({once.rate(reads):.1f} %); failed: "
                f"{dict(once.codes)}")  # fmt: skip
            say(
                f"3. {reads} reads with retries (up to {WITH.max_attempts} attempts, backoff"
                f" {WITH.initial_backoff_ms:g} ms x{WITH.multiplier:g} up to"
                f" {WITH.max_backoff_ms:g} ms, full jitter)"
            )
            again = await measure(
                with_retries, customer.token, product.product_id, reads, per_second
            )
            retries = with_retries.counters[("product", "retries")]
            say(f"   {again.ok}/{reads} succeeded ({again.rate(reads):.1f} %) in"
                f" {again.attempts} attempts ({retries} retries); failed: "
                f"{dict(again.codes)}")  # fmt: skip
            say(
                "   (with the default retry budget, 10 tokens and 0.1 earned per success,"
                f" a {rate:.0%} failure rate would have spent it: retries would stop"
                " until successes earned it back)"
            )
        say("4. a read with a bad argument, faults off again")
        bad = Reads()
        code = "OK"
        try:
            await read(with_retries, customer.token, "not-a-uuid", bad.counted)
        except grpc.aio.AioRpcError as error:
            code = error.code().name
            say(f"   {code}: {error.details()} after {bad.attempts} attempt(s)")
    finally:
        for clients in (plain, without, with_retries):
            await clients.close()
    ok = (
        again.rate(reads) > once.rate(reads)
        and code == "INVALID_ARGUMENT"
        and bad.attempts == 1
        and patch.restored
    )
    summary = (
        f"demo-retry: success without {once.rate(reads):.1f}%, with {again.rate(reads):.1f}%;"
        f" {code} attempts {bad.attempts}"
    )
    if not patch.restored:
        summary += " (config NOT restored)"
    return DemoResult(ok, summary)


async def main(reads: int, rate: float) -> int:
    return await on_make_run(
        "demo-retry",
        ["product"],
        lambda client, directory, stack: run_demo(
            client, directory, ClientTLS.operator(stack.tls_dir), reads=reads, rate=rate
        ),
    )


def cli(
    reads: Annotated[int, typer.Option(help="reads per phase")] = READS,
    rate: Annotated[float, typer.Option(help="share of product calls answered UNAVAILABLE")] = (
        FAULT_RATE
    ),
) -> None:
    sys.exit(asyncio.run(main(reads, rate)))


if __name__ == "__main__":
    typer.run(cli)
