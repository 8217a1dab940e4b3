"""`make bench`, observability's cost: the same system measured with tracing and metrics
off, then on at the default sampling, in one run on the bench stack.

For each: GetProduct throughput at saturation, driven by ghz (one connection, mTLS and
a token, as any client), and the saga's P95 at a fixed open-loop rate. "Off" starts the
instances without a trace endpoint and without metrics (no span recorded, no metrics
interceptor, no /metrics port); "on" is what `make run` starts. Rate limits are lifted
for the product service in both, so ghz measures the server, not the limiter.

Prints one line per goal (at most 10 % cost each), met or NOT met.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer

from devstack.stack import Stack
from shared import tls
from shared.auth.identity import Role
from shared.auth.keys import generate_keypair, load_private_key
from shared.auth.tokens import TokenIssuer
from shared.config import store
from shared.registry.etcd import etcd_client
from shared.rpc.client import ServiceClients
from shared.tls import ClientTLS
from tools.bench_saga import saga_latency, wait_sagas_ended
from tools.bench_tls import GHZ, ghz_rps
from tools.launcher import SystemLauncher, open_directory, wipe_system_data
from tools.shop_client import ShopClient

GOAL_PERCENT = 10.0
GET_PRODUCT = "shop.product.v1.ProductService.GetProduct"
NO_RATE_LIMITS = {"rate_limits": {"enabled": False}}


@dataclass(frozen=True)
class Figures:
    get_product_rps: float
    saga_p95_ms: float
    saga_completed: int
    saga_orders: int


async def lift_product_rate_limits(stack: Stack) -> None:
    client = etcd_client(stack.etcd_endpoint)
    try:
        current = await store.read(client, "product")
        await store.write(
            client,
            "product",
            {**current.document, **NO_RATE_LIMITS},
            expected_revision=current.revision,
            author="bench",
        )
    finally:
        await client.close()


def ghz_args(stack: Stack, address: str, token: str) -> list[str]:
    """Reflection for the schema, mTLS as the operator, the token in metadata."""
    return [
        f"--cacert={tls.ca_file(stack.tls_dir)}",
        f"--cert={tls.cert_file(stack.tls_dir, tls.OPERATOR)}",
        f"--key={tls.key_file(stack.tls_dir, tls.OPERATOR)}",
        "--cname=product",
        f"--metadata={json.dumps({'authorization': f'Bearer {token}'})}",
        address,
    ]


async def measure(
    stack: Stack,
    jwt_dir: Path,
    issuer: TokenIssuer,
    *,
    observe: bool,
    ghz_seconds: float,
    concurrency: int,
    rate: float,
    seconds: float,
) -> Figures:
    log_path = stack.profile.logs_dir / f"services-observe-{'on' if observe else 'off'}.log"
    with log_path.open("w") as service_log:
        launcher = SystemLauncher(
            stack, jwt_dir, observe=observe, log_sink=lambda line: print(line, file=service_log)
        )
        async with open_directory(stack) as directory:
            clients = ServiceClients(directory, ClientTLS.operator(stack.tls_dir))
            try:
                await launcher.start_all()
                await launcher.wait_ready(directory, timeout=90)
                token = issuer.issue(uuid.uuid4(), Role.ADMIN)[0]
                admin = ShopClient(clients, token=token)
                product = await admin.create_product(
                    f"GHZ-{uuid.uuid4().hex[:6].upper()}", "read-path item", 100
                )
                [instance] = directory.instances("product")
                await ghz_rps(  # warm-up: connections, caches, the JIT-less interpreter's dicts
                    ghz_args(stack, instance.address, token),
                    2,
                    concurrency,
                    GET_PRODUCT,
                    json.dumps({"product_id": product.product_id}),
                )
                rps = await ghz_rps(
                    ghz_args(stack, instance.address, token),
                    ghz_seconds,
                    concurrency,
                    GET_PRODUCT,
                    json.dumps({"product_id": product.product_id}),
                )
                latency = await saga_latency(stack, clients, issuer, rate, seconds)
                await wait_sagas_ended(stack)
            finally:
                await clients.close()
                await launcher.stop_all()
    return Figures(rps, float(latency["p95_ms"]), int(latency["completed"]), int(latency["orders"]))


def cost_line(name: str, off: float, on: float, higher_is_better: bool) -> tuple[str, bool]:
    cost = (off - on) / off * 100 if higher_is_better else (on - off) / off * 100
    met = cost <= GOAL_PERCENT
    return (
        f"bench: observability {name} cost {cost:+.1f}% (off {off:,.1f}, on {on:,.1f};"
        f" goal <= {GOAL_PERCENT:g}%) {'met' if met else 'NOT met'}",
        met,
    )


async def run(ghz_seconds: float, concurrency: int, rate: float, seconds: float) -> bool:
    if not GHZ.exists():
        raise SystemExit(f"{GHZ} is missing: run `make grpc-tools`")
    stack = Stack("bench")
    print("bench observability: starting its own stack (profile bench) ...", flush=True)
    await asyncio.to_thread(stack.up)
    try:
        await wipe_system_data(stack)
        jwt_dir = stack.profile_dir / "jwt"
        generate_keypair(jwt_dir)
        issuer = TokenIssuer(
            load_private_key(jwt_dir / "private.pem"), "shop-user", "shop", ttl=timedelta(hours=1)
        )
        await lift_product_rate_limits(stack)
        figures = {}
        for observe in (False, True):
            label = "on (default sampling)" if observe else "off"
            print(
                f"tracing and metrics {label}: ghz GetProduct {ghz_seconds:g}s at concurrency"
                f" {concurrency}, then the saga at {rate:g} orders/s for {seconds:g}s ...",
                flush=True,
            )
            got = await measure(
                stack,
                jwt_dir,
                issuer,
                observe=observe,
                ghz_seconds=ghz_seconds,
                concurrency=concurrency,
                rate=rate,
                seconds=seconds,
            )
            print(
                f"  GetProduct {got.get_product_rps:,.0f} calls/s; saga P95"
                f" {got.saga_p95_ms:.0f} ms ({got.saga_completed}/{got.saga_orders} ended)",
                flush=True,
            )
            figures[observe] = got
    finally:
        await asyncio.to_thread(stack.down)
    off, on = figures[False], figures[True]
    throughput, throughput_met = cost_line(
        "get_product_throughput", off.get_product_rps, on.get_product_rps, True
    )
    p95, p95_met = cost_line("saga_p95", off.saga_p95_ms, on.saga_p95_ms, False)
    print(throughput)
    print(p95)
    return throughput_met and p95_met


def main(
    ghz_seconds: Annotated[float, typer.Option(help="length of each ghz run")] = 10.0,
    concurrency: Annotated[int, typer.Option(help="ghz workers")] = 32,
    rate: Annotated[float, typer.Option(help="orders/s for the saga")] = 100.0,
    seconds: Annotated[float, typer.Option(help="length of the saga run")] = 15.0,
) -> None:
    asyncio.run(run(ghz_seconds, concurrency, rate, seconds))


if __name__ == "__main__":
    typer.run(main)
