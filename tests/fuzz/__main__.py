"""``python -m tests.fuzz --minutes N --seed S``: the long fuzz run behind ``make fuzz``.

Brings up its stack profile (``fuzz`` unless told otherwise; stopped again at
the end if this run started it), fresh service databases seeded with the demo
catalogue, the five services in this process, then fuzzes every RPC round
after round (``--surface grpc``), then, on fresh databases again with the
authorization server and a real gateway over the services, every REST route of
docs/openapi.json and every OAuth2 endpoint (``--surface edge``; both by
default, the time shared between them). Prints the requests sent and the status
codes seen per RPC and per route, then every failure as its shrunk request. Exit 0:
every property held; 1: at least one broke; 2: the run itself could not go on.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import sys
import tempfile
import time
from pathlib import Path

from devstack.stack import COMPONENTS, Stack
from tests.fuzz.edge_run import run_edge
from tests.fuzz.harness import Failure, Fuzzer
from tests.support.tokens import make_keys


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0, help="time budget (default 10)")
    parser.add_argument("--seed", type=int, default=None, help="default: a random one, printed")
    parser.add_argument("--examples", type=int, default=25, help="examples per RPC per round")
    parser.add_argument("--profile", default="fuzz", help="devstack profile (default fuzz)")
    parser.add_argument(
        "--rpc", action="append", default=[], help="only these (e.g. product.GetProduct)"
    )
    parser.add_argument(
        "--route", action="append", default=[], help="only these edge routes (a part of the label)"
    )
    parser.add_argument(
        "--surface",
        choices=("grpc", "edge", "all"),
        default="all",
        help="the RPCs, the gateway's routes and OAuth2 endpoints, or both (default)",
    )
    parser.add_argument("--keep-stack", action="store_true", help="leave the stack running")
    return parser.parse_args(argv)


def print_failures(failures: list[Failure]) -> None:
    print(f"\n{len(failures)} failure(s)" + (":" if failures else ": every property held"))
    for number, failure in enumerate(failures, 1):
        print(f"\n{number}. {failure.render()}")


async def fuzz_grpc(
    args: argparse.Namespace, stack: Stack, seed: int, minutes: float
) -> list[Failure]:
    with tempfile.TemporaryDirectory(prefix="fuzz-jwt-") as jwt_dir:
        keys = make_keys(Path(jwt_dir))
        async with Fuzzer(stack, keys) as fuzzer:
            rpcs = [r for r in fuzzer.rpcs() if not args.rpc or r.label in args.rpc]
            if not rpcs:
                raise ValueError(f"no RPC matches {args.rpc}")
            print(f"fuzzing {len(rpcs)} RPCs: {', '.join(r.label for r in rpcs)}", flush=True)
            started = time.monotonic()
            try:
                return await fuzzer.run(
                    examples=args.examples,
                    seed=seed,
                    minutes=minutes,
                    rpcs=rpcs,
                    progress=lambda line: print(line, flush=True),
                )
            finally:
                print(f"\nrequests sent in {(time.monotonic() - started) / 60:.1f} min:")
                print(fuzzer.report())


async def fuzz_edge(
    args: argparse.Namespace, stack: Stack, seed: int, minutes: float
) -> list[Failure]:
    with tempfile.TemporaryDirectory(prefix="fuzz-jwt-") as jwt_dir:
        started = time.monotonic()
        run = await run_edge(
            stack,
            make_keys(Path(jwt_dir)),
            examples=args.examples,
            seed=seed,
            minutes=minutes,
            routes=args.route,
            progress=lambda line: print(line, flush=True),
        )
    print(f"\nedge requests sent in {(time.monotonic() - started) / 60:.1f} min:")
    print(run.report)
    print(f"\nafter the edge run:\n{run.audit}")
    return run.failures


async def fuzz(args: argparse.Namespace, stack: Stack, log_file: Path) -> int:
    seed = args.seed if args.seed is not None else random.randrange(2**31)
    print(
        f"fuzz: profile {stack.profile.name}, seed {seed}, {args.minutes:g} min,"
        f" {args.examples} examples per RPC per round; service logs in {log_file}",
        flush=True,
    )
    surfaces = ("grpc", "edge") if args.surface == "all" else (args.surface,)
    minutes = args.minutes / len(surfaces)
    runs = {"grpc": fuzz_grpc, "edge": fuzz_edge}
    failures: list[Failure] = []
    for surface in surfaces:
        failures += await runs[surface](args, stack, seed, minutes)
    print_failures(failures)
    if failures:
        full = log_file.with_name("fuzz-failures.txt")
        full.write_text(
            "\n\n".join(f"{f.render()}\n    full request:\n{f.full_request}" for f in failures)
        )
        print(f"\nthe requests uncut: {full}")
        print(f"replay with: python -m tests.fuzz --seed {seed} --minutes {args.minutes:g}")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stack = Stack(args.profile)
    was_up = all(stack.is_up(c) for c in COMPONENTS)
    stack.up()
    log_file = stack.profile.dir / "logs" / "fuzz-services.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        level=logging.WARNING,
        filename=log_file,
        filemode="w",
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return asyncio.run(fuzz(args, stack, log_file))
    except Exception as error:  # the run itself broke: say so, exit 2
        logging.exception("fuzz run failed")
        print(f"fuzz: the run could not go on: {type(error).__name__}: {error}", file=sys.stderr)
        return 2
    finally:
        if not was_up and not args.keep_stack:
            stack.down()


if __name__ == "__main__":
    sys.exit(main())
