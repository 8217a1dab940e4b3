"""`make demo-ratelimit`: a per-user rate limit set live in the config center, against
`make run` (seed ch. 3: 限流).

1. buyer A (the demo customer) and buyer B (an account of its own) sign in;
2. ``/config/global`` gets a low limit on ProductService/GetProduct, per user, and every
   product instance applies it (no restart): the previous document is kept to put back;
3. A calls GetProduct past the limit: the calls over it are RESOURCE_EXHAUSTED, with
   ``error-reason: RATE_LIMITED`` and ``retry-after-ms``; B calls meanwhile and is served;
4. the previous ``/config/global`` is put back (also when a step failed), unless
   someone else changed it meanwhile (ops/config_patch.py).

The limits are per instance: with N product instances, A gets N bursts.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import aetcd
import grpc

from demos.session import on_make_run
from devstack.stack import Stack
from ops.config_admin import SCOPES
from ops.config_patch import patched_config
from ops.seed import CUSTOMER
from ops.shop_client import ShopClient
from shared.config import store
from shared.config.center import config_key
from shared.registry.discovery import ServiceDirectory
from shared.rpc.client import ServiceClients
from shared.rpc.status import REASON_KEY, RETRY_AFTER_KEY
from shared.tls import ClientTLS

METHOD = "/shop.product.v1.ProductService/GetProduct"
BUYER_B = ("ratelimit-buyer-b@shop.local", "ratelimit-password-1")
AUTHOR = "demo-ratelimit"  # in `shopctl config history global`
Say = Callable[[str], None]


def say(message: str) -> None:
    print(message, flush=True)


@dataclass
class DemoResult:
    allowed: int = 0
    limited: int = 0
    other_allowed: int = 0
    other_limited: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.allowed > 0
            and self.limited > 0
            and self.other_allowed > 0
            and self.other_limited == 0
            and not self.problems
        )

    @property
    def summary(self) -> str:
        if self.ok:
            return (
                f"demo-ratelimit: allowed {self.allowed}, limited {self.limited}"
                " (RESOURCE_EXHAUSTED), other caller unaffected"
            )
        problems = "; ".join(self.problems) or "the limit did not show"
        return (
            f"demo-ratelimit: FAILED: allowed {self.allowed}, limited {self.limited},"
            f" other caller allowed {self.other_allowed} limited {self.other_limited}: {problems}"
        )


async def get_product(client: ShopClient, product_id: str) -> tuple[str, dict[str, str]]:
    """("ok", {}) or (the status code's name, the trailers)."""
    try:
        await client.get_product(product_id)
    except grpc.aio.AioRpcError as error:
        # grpc's stubs type the trailers as one pair; they are a sequence of pairs.
        pairs: tuple[tuple[str, Any], ...] = tuple(cast(Any, error.trailing_metadata()) or ())
        trailers = {key: str(value) for key, value in pairs}
        return error.code().name, {**trailers, "details": error.details() or ""}
    return "ok", {}


async def run_demo(
    clients: ServiceClients,
    etcd: aetcd.Client,
    *,
    rate: float = 0.1,
    burst: int = 3,
    extra_calls: int = 4,
    out: Say = say,
) -> DemoResult:
    """The demo's core, on clients and an etcd client the caller opened."""
    result = DemoResult()
    buyer_a, buyer_b = ShopClient(clients), ShopClient(clients)
    await buyer_a.login(*CUSTOMER)
    await buyer_b.register_or_login(*BUYER_B)
    products = await buyer_a.all_products()
    if not products:
        result.problems.append("no product to read: is the demo data seeded?")
        return result
    product = products[0]
    out(f"1. buyer A ({CUSTOMER[0]}) and buyer B ({BUYER_B[0]}) signed in;")
    out(f"   both will read product {product.sku} ({product.product_id})")

    own = await store.read(etcd, SCOPES, "product")
    if own.document.get("rate_limits") is not None:
        result.problems.append(
            f"{config_key('product')} has rate_limits of its own, which override the global ones"
        )
        return result
    instances = len(clients.directory.instances("product"))
    out(
        f"2. {config_key('global')} gets a limit on {METHOD}: {rate:g}/s per user,"
        f" bursts of {burst}"
    )
    # Validated and compare-and-swapped as `shopctl config set`; put back on leaving.
    async with patched_config(etcd, "global", AUTHOR, say=out) as patch:
        try:
            revision = await patch.set(
                {"rate_limits": {"enabled": True, "methods": {METHOD: limit(rate, burst)}}}
            )
        except (store.ConfigConflict, store.InvalidDocument) as error:
            result.problems.append(f"could not set the limit: {error}")
            return result
        out(f"   every instance applied revision {revision}, no restart")
        calls = burst * instances + extra_calls  # each instance has its own buckets
        out(f"3. buyer A calls GetProduct {calls} times; buyer B calls {burst} times meanwhile")
        if instances > 1:
            out(f"   (limits are per instance: A may have {burst} on each of the {instances})")
        for i in range(calls):
            code, trailers = await get_product(buyer_a, product.product_id)
            if code == "ok":
                result.allowed += 1
                out(f"   A #{i + 1}: served")
            elif code == "RESOURCE_EXHAUSTED":
                result.limited += 1
                reason, wait = trailers.get(REASON_KEY), trailers.get(RETRY_AFTER_KEY, "")
                out(f"   A #{i + 1}: {code} ({REASON_KEY}={reason}, {RETRY_AFTER_KEY}={wait})")
                if reason != "RATE_LIMITED" or not wait.isdigit():
                    result.problems.append(f"call {i + 1} refused without reason or retry-after")
            else:
                result.problems.append(f"A's call {i + 1}: {code} {trailers.get('details')}")
                out(f"   A #{i + 1}: unexpected {code}: {trailers.get('details')}")
            if i < burst:
                code, trailers = await get_product(buyer_b, product.product_id)
                if code == "ok":
                    result.other_allowed += 1
                    out(f"   B #{i + 1}: served")
                else:
                    result.other_limited += 1
                    out(f"   B #{i + 1}: {code} {trailers.get('details')}")
    return result


def limit(rate: float, burst: int) -> dict[str, float]:
    return {"rate_per_second": rate, "burst": burst}


async def main() -> int:
    async def demo(etcd: aetcd.Client, directory: ServiceDirectory, stack: Stack) -> DemoResult:
        clients = ServiceClients(directory, ClientTLS.operator(stack.tls_dir))
        try:
            return await run_demo(clients, etcd)
        finally:
            await clients.close()

    return await on_make_run("demo-ratelimit", ["user", "product"], demo)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
