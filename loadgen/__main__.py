"""`make load`: ``python -m loadgen --profile smoke`` (see --help)."""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import grpc
import typer

from loadgen import edge
from loadgen.buyers import TokenCache
from loadgen.runner import ScenarioResult, run_scenarios
from loadgen.settings import PROFILES, SCENARIOS, ScenarioSettings, resolve
from loadgen.target import env_target
from ops.tracing import trace_tool
from shared.errors import DomainError
from shared.logs import configure_logging

REPO_ROOT = Path(__file__).resolve().parents[1]
PROFILE_HELP = ", ".join(
    f"{name} ({' + '.join(s.scenario for s in scenarios)})" for name, scenarios in PROFILES.items()
)


async def run(
    scenarios: tuple[ScenarioSettings, ...], profile: str, reports: Path, target_name: str
) -> int:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    if target_name == "env":
        # The buyers' tokens live as long as the system's users: a cluster's Job keeps
        # them beside its reports.
        cache = TokenCache(reports / "load-buyers.json")
        chosen = env_target()
    else:
        # devstack only on this path: the load generator's image has no local stack.
        from loadgen.dev_target import dev_target, dev_token_cache

        cache = dev_token_cache()
        chosen = dev_target(reports / f"stack-{stamp}.log")
    async with chosen as target:
        results = await run_scenarios(
            scenarios, target, reports, profile=profile, token_cache=cache
        )
    compare_edges(results, reports / f"edge-{stamp}.json")
    return verdict(results)


def compare_edges(results: list[ScenarioResult], path: Path) -> None:
    """Where a scenario ran over gRPC and REST both: what the edge added (loadgen/edge.py)."""
    compared = edge.compare([r.report for r in results])
    if not compared:
        return
    print()
    for line in edge.lines(compared):
        print(line)
    edge.write({"kind": "edge", "scenarios": compared}, path)
    print(f"edge: report {path}")


def verdict(results: list[ScenarioResult]) -> int:
    failed = [r.json_path.name.rsplit("-", 1)[0] for r in results if not r.ok]
    print()
    for r in results:
        v = r.report["verdict"]
        name = r.json_path.name.rsplit("-", 1)[0]
        print(
            f"{name:<17} {'PASS' if r.ok else 'FAIL'}  audit "
            f"{'ok' if v['audit_ok'] else 'FAILED'}, error rate {v['error_rate']:.2%} "
            f"(max {v['max_error_rate']:.2%})  {r.json_path}"
        )
    print(f"load: {'FAILED: ' + ', '.join(failed) if failed else 'all scenarios passed'}")
    return 1 if failed else 0


def main(
    profile: Annotated[str, typer.Option(help=f"one of: {PROFILE_HELP}")] = "smoke",
    scenario: Annotated[
        str | None, typer.Option(help=f"only this scenario of the profile ({', '.join(SCENARIOS)})")
    ] = None,
    rate: Annotated[float | None, typer.Option(help="arrivals per second (open loop)")] = None,
    duration: Annotated[float | None, typer.Option(help="measured seconds")] = None,
    concurrency: Annotated[
        int | None, typer.Option(help="in-flight cap; arrivals beyond it are dropped")
    ] = None,
    users: Annotated[int | None, typer.Option(help="buyers (real accounts)")] = None,
    seed: Annotated[int | None, typer.Option(help="fixes each arrival's call and buyer")] = None,
    baseline_duration: Annotated[
        float | None, typer.Option(help="seconds of bare health Check before the measurement")
    ] = None,
    settle: Annotated[float | None, typer.Option(help="audit re-checks for this long")] = None,
    max_error_rate: Annotated[
        float | None, typer.Option(help="fail above this share of failed/dropped arrivals")
    ] = None,
    stock: Annotated[int | None, typer.Option(help="flash-sale: units of the hot SKU")] = None,
    reports: Annotated[Path, typer.Option(help="where the JSON and PNG go")] = REPO_ROOT
    / "reports",
    target: Annotated[
        str,
        typer.Option(
            help="dev: the `make run` system (started if down); "
            "env: the one SHOP_ETCD_ENDPOINT, SHOP_TLS_DIR and SHOP_<SVC>_PG_DSN name"
        ),
    ] = "dev",
) -> None:
    """Load-test the `make run` system (started in the background if none is up)."""
    configure_logging(os.environ.get("SHOP_LOG_LEVEL", "WARNING"))
    if target not in ("dev", "env"):
        raise typer.BadParameter(f"--target is dev or env, not {target!r}")
    # Its calls start traces as any client's would, at the default ratio (if Zipkin is up):
    # the one SHOP_TRACE_ENDPOINT names, else the dev stack's when the target is.
    endpoint = os.environ.get("SHOP_TRACE_ENDPOINT", "")
    if not endpoint and target == "dev":
        from loadgen.dev_target import dev_spans_url

        endpoint = dev_spans_url()
    trace_tool("load", endpoint)
    try:
        scenarios = resolve(
            profile,
            scenario=scenario,
            rate=rate,
            duration=duration,
            concurrency=concurrency,
            users=users,
            seed=seed,
            baseline_duration=baseline_duration,
            settle=settle,
            max_error_rate=max_error_rate,
            stock=stock,
        )
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    try:
        code = asyncio.run(run(scenarios, profile, reports, target))
    except grpc.aio.AioRpcError as error:
        # Setup could not talk to the system (measured calls never raise).
        print(f"load: a setup call failed: {error.code().name}: {error.details()}", file=sys.stderr)
        code = 2
    except (RuntimeError, TimeoutError, DomainError) as error:
        print(f"load: could not run: {error!r}", file=sys.stderr)
        code = 2
    sys.exit(code)


if __name__ == "__main__":
    typer.run(main)
