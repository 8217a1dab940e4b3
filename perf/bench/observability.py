"""`make bench`, observability's cost: the system measured with tracing and metrics on
(the default sampling, what `make run` starts) and off, in one run on the bench stack.

- GetProduct throughput at saturation, driven by ghz (one connection, mTLS and a token,
  as any client). An observed and a bare product instance run side by side and ghz
  alternates between them, round by round, so both meet the same machine: on a shared
  2-core box two runs minutes apart differ by more than the cost being measured.
- The saga's P95 at a fixed open-loop rate (50/s by default: see ``main``), with the
  whole system on, off, off, on (the mean of each pair), since a saga needs all five
  services in one mode.

"Off" starts instances without a trace endpoint and without metrics (no span recorded,
no metrics interceptor, no /metrics port). Rate limits are lifted for the product
service, so ghz measures the server, not the limiter. Prints one line per goal (at most
10 % cost each), met or NOT met.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer

from devstack.launcher import SystemLauncher, open_directory, wipe_system_data
from devstack.stack import Stack
from ops.config_admin import SCOPES
from ops.shop_client import ShopClient
from perf.bench.saga import Shop, steady_saga, wait_sagas_ended
from perf.bench.tls import GHZ, ghz_rps
from shared import tls
from shared.auth.identity import Role
from shared.auth.keys import generate_keypair, load_private_key
from shared.auth.tokens import TokenIssuer
from shared.config import store
from shared.registry.discovery import ServiceDirectory
from shared.registry.etcd import etcd_client
from shared.rpc.client import ServiceClients
from shared.settings import DEFAULT_ISSUER
from shared.tls import ClientTLS

GOAL_PERCENT = 10.0
GET_PRODUCT = "shop.product.v1.ProductService.GetProduct"
NO_RATE_LIMITS = {"rate_limits": {"enabled": False}}
SAGA_BUYERS = 200


async def lift_product_rate_limits(stack: Stack) -> None:
    client = etcd_client(stack.etcd_endpoint, tls=ClientTLS.operator(stack.tls_dir))
    try:
        current = await store.read(client, SCOPES, "product")
        await store.write(
            client,
            SCOPES,
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


@contextlib.asynccontextmanager
async def system(
    stack: Stack, jwt_dir: Path, directory: ServiceDirectory, *, observe: bool, tag: str
) -> AsyncIterator[SystemLauncher]:
    """The five services, observed or not, until the block ends."""
    log_path = stack.profile.logs_dir / f"services-{tag}.log"
    with log_path.open("w") as service_log:
        launcher = SystemLauncher(
            stack,
            jwt_dir,
            observe=observe,
            publish_state=False,
            log_sink=lambda line: print(line, file=service_log),
        )
        try:
            await launcher.start_all()
            await launcher.wait_ready(directory, timeout=90)
            yield launcher
        finally:
            await launcher.stop_all()


async def get_product_rps(
    stack: Stack,
    jwt_dir: Path,
    directory: ServiceDirectory,
    issuer: TokenIssuer,
    *,
    rounds: int,
    seconds: float,
    concurrency: int,
) -> tuple[list[float], list[float]]:
    """Calls/s of each round against the observed and the bare product instance."""
    async with system(stack, jwt_dir, directory, observe=True, tag="observed") as observed:
        bare = SystemLauncher(
            stack, jwt_dir, observe=False, publish_state=False, log_sink=lambda _: None
        )
        try:
            child = await bare.start_instance("product", index=1)
            await bare.wait_ready(directory, timeout=60)
            addresses = {i.instance_id: i.address for i in directory.instances("product")}
            on_address = next(
                addresses[p.instance_id] for p in observed.processes if p.service == "product"
            )
            off_address = addresses[child.instance_id]
            token = issuer.issue(uuid.uuid4(), Role.ADMIN)[0]
            clients = ServiceClients(directory, ClientTLS.operator(stack.tls_dir))
            try:
                product = await ShopClient(clients, token=token).create_product(
                    f"GHZ-{uuid.uuid4().hex[:6].upper()}", "read-path item", 100
                )
            finally:
                await clients.close()
            data = json.dumps({"product_id": product.product_id})

            async def ghz(address: str, length: float) -> float:
                args = ghz_args(stack, address, token)
                return await ghz_rps(args, length, concurrency, GET_PRODUCT, data)

            for address in (on_address, off_address):  # warm-up: connections, caches
                await ghz(address, 2)
            figures: dict[str, list[float]] = {on_address: [], off_address: []}
            for round_ in range(rounds):
                pair = (on_address, off_address) if round_ % 2 == 0 else (off_address, on_address)
                for address in pair:
                    figures[address].append(await ghz(address, seconds))
        finally:
            await bare.stop_all()
    return figures[on_address], figures[off_address]


async def saga_p95(
    stack: Stack,
    jwt_dir: Path,
    directory: ServiceDirectory,
    issuer: TokenIssuer,
    *,
    observe: bool,
    rate: float,
    seconds: float,
) -> float:
    tag = "saga-observed" if observe else "saga-bare"
    async with system(stack, jwt_dir, directory, observe=observe, tag=tag):
        clients = ServiceClients(directory, ClientTLS.operator(stack.tls_dir))
        try:
            shop = await Shop.open(clients, issuer, SAGA_BUYERS)
            latency, _ = await steady_saga(stack, shop, rate, seconds)
            await wait_sagas_ended(stack)
        finally:
            await clients.close()
    if latency["refused"]:
        print(f"  {latency['refused']} of {latency['orders']} orders refused (overloaded)")
    return float(latency["p95_ms"])


def cost_line(name: str, off: float, on: float, higher_is_better: bool) -> tuple[str, bool]:
    cost = (off - on) / off * 100 if higher_is_better else (on - off) / off * 100
    met = cost <= GOAL_PERCENT
    return (
        f"bench: observability {name} cost {cost:+.1f}% (off {off:,.1f}, on {on:,.1f};"
        f" goal <= {GOAL_PERCENT:g}%) {'met' if met else 'NOT met'}",
        met,
    )


async def run(
    rounds: int, ghz_seconds: float, concurrency: int, rate: float, seconds: float
) -> bool:
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
            load_private_key(jwt_dir / "private.pem"),
            DEFAULT_ISSUER,
            "shop",
            ttl=timedelta(hours=1),
        )
        await lift_product_rate_limits(stack)
        async with open_directory(stack) as directory:
            print(
                f"GetProduct, ghz at concurrency {concurrency}: an observed and a bare product"
                f" instance side by side, {rounds} alternating rounds of {ghz_seconds:g}s ...",
                flush=True,
            )
            on_rps, off_rps = await get_product_rps(
                stack, jwt_dir, directory, issuer,
                rounds=rounds, seconds=ghz_seconds, concurrency=concurrency,
            )  # fmt: skip
            print(f"  observed: {', '.join(f'{r:,.0f}' for r in on_rps)} calls/s")
            print(f"  bare:     {', '.join(f'{r:,.0f}' for r in off_rps)} calls/s", flush=True)
            p95s: dict[bool, list[float]] = {True: [], False: []}
            # ABBA: the database grows and the machine warms over the runs.
            for observe in (True, False, False, True):
                print(
                    f"saga at {rate:g} orders/s for {seconds:g}s, tracing and metrics"
                    f" {'on' if observe else 'off'} ...",
                    flush=True,
                )
                p95 = await saga_p95(
                    stack, jwt_dir, directory, issuer, observe=observe, rate=rate, seconds=seconds
                )
                print(f"  P95 {p95:.0f} ms", flush=True)
                p95s[observe].append(p95)
    finally:
        await asyncio.to_thread(stack.down)
    throughput, throughput_met = cost_line(
        "get_product_throughput", statistics.median(off_rps), statistics.median(on_rps), True
    )
    p95_line, p95_met = cost_line(
        "saga_p95", statistics.mean(p95s[False]), statistics.mean(p95s[True]), False
    )
    print(throughput)
    print(p95_line)
    return throughput_met and p95_met


def main(
    rounds: Annotated[int, typer.Option(help="ghz rounds per instance")] = 4,
    ghz_seconds: Annotated[float, typer.Option(help="length of each ghz round")] = 5.0,
    concurrency: Annotated[int, typer.Option(help="ghz workers")] = 32,
    # The goal's figure is at 100/s; on this 2-core machine the saga no longer keeps up at
    # 100/s even bare (P95 of seconds: a queue, whose growth swamps any cost), so the
    # default measures where it does; `--rate 100` measures the goal's point.
    rate: Annotated[float, typer.Option(help="orders/s for the saga")] = 50.0,
    seconds: Annotated[float, typer.Option(help="length of each saga run")] = 15.0,
) -> None:
    asyncio.run(run(rounds, ghz_seconds, concurrency, rate, seconds))


if __name__ == "__main__":
    typer.run(main)
