"""P1: what the read path costs over the bare server, measured by ghz.

Both calls go to the same product instance over one mTLS connection with the same
token in metadata: ``grpc.health.v1.Health/Check`` (no handler work: the floor of
the server, its TLS and its interceptors) and an authenticated ``GetProduct``.
Rounds alternate which call goes first, so a drift in the machine's load meets both.
The product service's rate limiter stays on, with GetProduct's bucket raised above
what ghz can reach, so it is measured, not what it refuses.
"""

from __future__ import annotations

import json
import statistics
from typing import Any

from devstack.stack import Stack
from perf.bench.observability import GET_PRODUCT, ghz_args
from perf.bench.tls import CALL as CHECK
from perf.bench.tls import ghz_rps

GET_PRODUCT_METHOD = "/shop.product.v1.ProductService/GetProduct"
# /config/product's change for the measurement (put back after it: ops/config_patch.py).
GET_PRODUCT_OUT_OF_REACH = {
    "rate_limits": {
        "enabled": True,
        "methods": {GET_PRODUCT_METHOD: {"rate_per_second": 1_000_000, "burst": 1_000_000}},
    }
}


async def get_product_vs_check(
    stack: Stack,
    address: str,
    token: str,
    product_id: str,
    *,
    rounds: int,
    seconds: float,
    concurrency: int,
) -> dict[str, Any]:
    args = ghz_args(stack, address, token)
    calls = {
        "check": (CHECK, "{}"),
        "get_product": (GET_PRODUCT, json.dumps({"product_id": product_id})),
    }
    for call, data in calls.values():  # warm-up: the connection, the caches, the JIT of nothing
        await ghz_rps(args, 1, concurrency, call, data)
    rps: dict[str, list[float]] = {name: [] for name in calls}
    for round_ in range(rounds):
        names = list(calls) if round_ % 2 == 0 else list(calls)[::-1]
        for name in names:
            call, data = calls[name]
            rps[name].append(await ghz_rps(args, seconds, concurrency, call, data))
    check, get = statistics.median(rps["check"]), statistics.median(rps["get_product"])
    return {
        "ratio": get / check,
        "check_rps": round(check, 1),
        "get_product_rps": round(get, 1),
        "rounds": {name: [round(r, 1) for r in runs] for name, runs in rps.items()},
        "concurrency": concurrency,
        "seconds_per_round": seconds,
        "instance": address,
    }
