"""`make chaos`: ``python -m perf.chaos --profile full|short`` against the `make run` system.

If no system is up it starts one the way `make run REPLICAS=2` does, in the
background, and stops it at the end. Exit 0: every goal met; 1: the audit failed
or a goal was missed; 2: the run could not be made.
"""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import grpc
import typer

from devstack.launcher import REPO_ROOT, SERVICES, read_instances
from devstack.stack import Stack
from loadgen.buyers import TokenCache
from loadgen.dev_target import dev_target
from ops.tracing import trace_tool
from perf.chaos.faults import Proc
from perf.chaos.runner import run_chaos
from perf.chaos.schedule import PROFILES, profile
from shared.errors import DomainError
from shared.logs import configure_logging

REPLICAS = 2


def instances_of(stack: Stack) -> list[Proc]:
    return [Proc(r.service, r.index, r.instance_id, r.pid) for r in read_instances(stack)]


async def run(profile_name: str, reports: Path, rate: float | None = None) -> int:
    chosen = profile(profile_name)
    if rate is not None:
        chosen = chosen.at_rate(rate)
    stack = Stack("dev")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    async with dev_target(reports / f"stack-{stamp}.log", replicas=REPLICAS) as target:
        if thin := [s for s in SERVICES if len(target.directory.instances(s)) < REPLICAS]:
            print(
                f"chaos: note: fewer than {REPLICAS} instances of {', '.join(thin)} are up "
                f"(`make run REPLICAS={REPLICAS}` runs {REPLICAS}); measuring what is there"
            )
        result = await run_chaos(
            chosen,
            target,
            stack,
            lambda: instances_of(stack),
            reports,
            token_cache=TokenCache(stack.profile_dir / "load-buyers.json"),
        )
    return 0 if result.ok else 1


def main(
    profile_name: Annotated[
        str, typer.Option("--profile", help=f"one of: {', '.join(PROFILES)}")
    ] = "full",
    rate: Annotated[
        float | None,
        typer.Option(help="arrivals per second instead of the profile's (its stock scales along)"),
    ] = None,
    reports: Annotated[Path, typer.Option(help="where the JSON and PNG go")] = REPO_ROOT
    / "reports",
) -> None:
    """Chaos against the `make run` system (started with 2 replicas if none is up)."""
    configure_logging(os.environ.get("SHOP_LOG_LEVEL", "ERROR"))
    # Its calls start traces as any client's would, at the default ratio (if Zipkin is up).
    trace_tool("chaos", Stack("dev").zipkin.spans_url)
    if profile_name not in PROFILES:
        raise typer.BadParameter(f"--profile is one of {', '.join(PROFILES)}, not {profile_name!r}")
    if rate is not None and not 0 < rate <= 1000:
        raise typer.BadParameter(f"--rate is arrivals per second in (0, 1000], not {rate:g}")
    try:
        code = asyncio.run(run(profile_name, reports, rate))
    except grpc.aio.AioRpcError as error:
        print(
            f"chaos: a setup call failed: {error.code().name}: {error.details()}", file=sys.stderr
        )
        code = 2
    except (RuntimeError, TimeoutError, DomainError, ValueError) as error:
        print(f"chaos: could not run: {error}", file=sys.stderr)
        code = 2
    sys.exit(code)


if __name__ == "__main__":
    typer.run(main)
