"""`make demo-ratelimit`: a per-user rate limit set live in the config center, against
`make run` (seed ch. 3: 限流).

1. buyer A (the demo customer) and buyer B (an account of its own) sign in;
2. ``/config/global`` gets a low limit on ProductService/GetProduct, per user, and every
   product instance applies it (no restart): the previous document is kept to put back;
3. A calls GetProduct past the limit: the calls over it are RESOURCE_EXHAUSTED, with
   ``error-reason: RATE_LIMITED`` and ``retry-after-ms``; B calls meanwhile and is served;
4. the previous ``/config/global`` is put back (also when a step failed).

The limits are per instance: with N product instances, A gets N bursts.
"""

from __future__ import annotations

import asyncio
import copy
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, cast

import aetcd
import grpc
import typer

from devstack.stack import Stack
from shared.config import store
from shared.config.center import STATUS_PREFIX, config_key
from shared.errors import DomainError
from shared.registry.etcd import etcd_client
from shared.registry.watch import prefix_range
from shared.rpc.client import ServiceClients
from shared.rpc.status import REASON_KEY, RETRY_AFTER_KEY
from tools.seed import CUSTOMER
from tools.shop_client import ShopClient, connect

METHOD = "/shop.product.v1.ProductService/GetProduct"
BUYER_B = ("ratelimit-buyer-b@shop.local", "ratelimit-password-1")
APPLY_TIMEOUT = 15.0
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


async def delete_if_unchanged(etcd: aetcd.Client, expected: int) -> bool:
    """Deletes ``/config/global`` only if it is still at revision ``expected``."""
    key = config_key("global").encode()
    txn = etcd.transactions
    succeeded, _ = await etcd.transaction(
        compare=[txn.mod(key) == expected], success=[txn.delete(key)], failure=[]
    )
    return bool(succeeded)


async def product_statuses(etcd: aetcd.Client) -> dict[str, int]:
    """instance id -> the ``/config/global`` revision it runs with, for every live product."""
    start, end = prefix_range(f"{STATUS_PREFIX}product/".encode())
    found = {}
    for kv in await etcd.get_range(start, end):
        instance = bytes(kv.key).decode().rsplit("/", 1)[-1]
        found[instance] = int(json.loads(bytes(kv.value))["revisions"].get("global", 0))
    return found


async def wait_applied(etcd: aetcd.Client, revision: int, timeout: float = APPLY_TIMEOUT) -> int:
    """Until every product instance runs with ``revision``; how many there are."""
    deadline = time.monotonic() + timeout
    while True:
        applied = await product_statuses(etcd)
        if applied and all(r == revision for r in applied.values()):
            return len(applied)
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"product instances at {applied} did not apply revision {revision}"
                f" within {timeout:g}s"
            )
        await asyncio.sleep(0.1)


def limited_document(previous: dict[str, Any], rate: float, burst: int) -> dict[str, Any]:
    """The previous document, plus (only) the demo's limit on GetProduct, switched on."""
    document = copy.deepcopy(previous)
    limits = dict(document.get("rate_limits") or {})
    limits["enabled"] = True
    limits["methods"] = {
        **(limits.get("methods") or {}),
        METHOD: {"rate_per_second": rate, "burst": burst},
    }
    document["rate_limits"] = limits
    return document


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

    own = await store.read(etcd, "product")
    if own.document.get("rate_limits") is not None:
        result.problems.append(
            f"{config_key('product')} has rate_limits of its own, which override the global ones"
        )
        return result
    before = await store.read(etcd, "global")
    document = limited_document(before.document, rate, burst)
    out(
        f"2. {config_key('global')} (revision {before.revision or 'none'}) gets a limit on"
        f" {METHOD}: {rate:g}/s per user, bursts of {burst}"
    )
    try:  # validated, and only if nobody wrote since we read (as `shopctl config set`)
        revision = await store.write(
            etcd, "global", document, expected_revision=before.revision, author=AUTHOR
        )
    except (store.ConfigConflict, store.InvalidDocument) as error:
        result.problems.append(f"could not set the limit: {error}")
        return result
    try:
        instances = await wait_applied(etcd, revision)
        out(f"   every product instance ({instances}) applied revision {revision}, no restart")
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
    finally:
        await restore(etcd, before, revision, out)
    return result


async def restore(etcd: aetcd.Client, before: store.StoredDocument, ours: int, out: Say) -> None:
    """The document from before the demo back, unless someone wrote since the demo did."""
    if before.revision == 0:
        what, restored = "the defaults (no document)", 0
        changed = not await delete_if_unchanged(etcd, ours)
    else:
        what, changed = "the previous document", False
        try:
            restored = await store.write(
                etcd, "global", before.document, expected_revision=ours, author=AUTHOR
            )
        except store.ConfigConflict:
            changed = True
        except store.InvalidDocument as error:  # it was refused before the demo, too
            out(f"4. the previous {config_key('global')} is not valid, not put back: {error}")
            return
    if changed:
        out(f"4. {config_key('global')} was changed by someone else meanwhile: left as it is")
        return
    out(f"4. {config_key('global')} is back to {what}")
    try:
        await wait_applied(etcd, restored)
    except TimeoutError as error:
        out(f"   (not yet applied everywhere: {error})")


async def run(profile: str) -> int:
    stack = Stack(profile)
    etcd = etcd_client(stack.etcd_endpoint)
    try:
        await store.read(etcd, "global")  # fails fast if etcd is down (discovery would wait)
        async with connect(stack.etcd_endpoint, stack.tls_dir) as clients:
            result = await run_demo(clients, etcd)
    except (
        grpc.aio.AioRpcError, DomainError, aetcd.ClientError, OSError, TimeoutError, ValueError
    ) as error:  # fmt: skip
        detail = error.details() if isinstance(error, grpc.aio.AioRpcError) else str(error)
        result = DemoResult(problems=[f"the demo could not run ({detail}); is `make run` up?"])
    finally:
        await etcd.close()
    say(result.summary)
    return 0 if result.ok else 1


def main(
    profile: Annotated[str, typer.Option(help="the stack `make run` started")] = "dev",
) -> None:
    sys.exit(asyncio.run(run(profile)))


if __name__ == "__main__":
    typer.run(main)
