"""What mutual TLS costs: the health Check over mTLS against plaintext, in one run.

One server process, one health servicer, two ports: the kit's mTLS credentials
(``shared.tls.server_credentials``, as every service serves) and a throwaway
plaintext port that exists only here. ghz drives both the same way, in
alternating rounds so a busy machine hurts both alike; then a small driver
opens a new connection for every Check, which is where the handshake shows.

python -m perf.bench.tls [--seconds 10] [--concurrency 50] [--rounds 2]
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

import grpc
import typer
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from pki import authority
from shared import tls
from shared.settings import REPO_ROOT

GHZ = REPO_ROOT / ".stack" / "tools" / "bin" / "ghz"
SERVICE = "product"  # whose certificate the server presents
CALL = "grpc.health.v1.Health/Check"


def write_protoset(path: Path) -> Path:
    """The health proto for ghz, from the generated module (no reflection needed)."""
    files = descriptor_pb2.FileDescriptorSet()
    health_pb2.DESCRIPTOR.CopyToProto(files.file.add())
    path.write_bytes(files.SerializeToString())
    return path


async def ghz_report(
    args: list[str], seconds: float, concurrency: int, call: str = CALL, data: str = "{}"
) -> dict[str, Any]:
    """ghz's JSON report of a run over one connection; raises if any call failed."""
    process = await asyncio.create_subprocess_exec(
        str(GHZ),
        f"--call={call}",
        f"--data={data}",
        f"--duration={seconds}s",
        f"--concurrency={concurrency}",
        "--connections=1",
        "--duration-stop=wait",  # in-flight calls finish, not counted as errors
        "--format=json",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"ghz failed: {err.decode()}{out.decode()[:500]}")
    report: dict[str, Any] = json.loads(out)
    errors = {k: v for k, v in (report.get("statusCodeDistribution") or {}).items() if k != "OK"}
    if errors:
        raise RuntimeError(f"ghz saw errors: {errors} {report.get('errorDistribution')}")
    return report


async def ghz_rps(
    args: list[str], seconds: float, concurrency: int, call: str = CALL, data: str = "{}"
) -> float:
    """Calls per second ghz reached over one connection; raises if any call failed."""
    return float((await ghz_report(args, seconds, concurrency, call, data))["rps"])


async def new_connection_rate(
    open_channel: Callable[[], grpc.aio.Channel], seconds: float
) -> float:
    """Checks per second when every Check pays for its own connection."""
    done, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        async with open_channel() as channel:
            await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
        done += 1
    return done / seconds


async def alternate(
    rounds: int, plain: Callable[[], Awaitable[float]], mtls: Callable[[], Awaitable[float]]
) -> tuple[float, float]:
    plain_runs: list[float] = []
    mtls_runs: list[float] = []
    for i in range(rounds):
        # Alternate which goes first, so a drift in the machine's load evens out.
        order = [(plain_runs, plain), (mtls_runs, mtls)]
        for runs, measure in order if i % 2 == 0 else order[::-1]:
            runs.append(await measure())
    print(f"    plaintext rounds: {', '.join(f'{r:,.0f}' for r in plain_runs)}", flush=True)
    print(f"    mTLS rounds:      {', '.join(f'{r:,.0f}' for r in mtls_runs)}", flush=True)
    return statistics.mean(plain_runs), statistics.mean(mtls_runs)


async def run(seconds: float, concurrency: int, rounds: int, handshake_seconds: float) -> None:
    if not GHZ.exists():
        raise SystemExit(f"{GHZ} is missing: run `make grpc-tools`")
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        tls_dir = work / "tls"
        authority.ensure_authority(tls_dir)
        protoset = write_protoset(work / "health.protoset")
        server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(HealthServicer(), server)
        secure_port = server.add_secure_port(
            "127.0.0.1:0", tls.server_credentials(tls_dir, SERVICE)
        )
        plain_port = server.add_insecure_port("127.0.0.1:0")  # the throwaway port
        await server.start()
        try:
            common = [f"--protoset={protoset}"]
            plain_args = [*common, "--insecure", f"127.0.0.1:{plain_port}"]
            mtls_args = [
                *common,
                f"--cacert={tls.ca_file(tls_dir)}",
                f"--cert={tls.cert_file(tls_dir, tls.OPERATOR)}",
                f"--key={tls.key_file(tls_dir, tls.OPERATOR)}",
                f"--cname={SERVICE}",
                f"127.0.0.1:{secure_port}",
            ]
            print(
                f"bench_tls: ghz {CALL}, 1 connection, concurrency {concurrency}, "
                f"{seconds:g}s x {rounds} rounds each ...",
                flush=True,
            )
            plain, mtls = await alternate(
                rounds,
                lambda: ghz_rps(plain_args, seconds, concurrency),
                lambda: ghz_rps(mtls_args, seconds, concurrency),
            )
            print(
                f"  plaintext {plain:,.0f} rps, mTLS {mtls:,.0f} rps: "
                f"mTLS/plaintext = {mtls / plain:.3f}",
                flush=True,
            )

            operator = tls.ClientTLS.operator(tls_dir)
            print(f"bench_tls: a new connection per Check, {handshake_seconds:g}s ...", flush=True)
            plain_conn, mtls_conn = await alternate(
                rounds,
                lambda: new_connection_rate(
                    lambda: grpc.aio.insecure_channel(f"127.0.0.1:{plain_port}"),
                    handshake_seconds,
                ),
                lambda: new_connection_rate(
                    lambda: operator.channel(f"127.0.0.1:{secure_port}", SERVICE),
                    handshake_seconds,
                ),
            )
            print(
                f"  plaintext {plain_conn:,.0f}/s, mTLS {mtls_conn:,.0f}/s: "
                f"mTLS/plaintext = {mtls_conn / plain_conn:.3f}",
                flush=True,
            )
            print(
                f"\nmTLS/plaintext health Check throughput: {mtls / plain:.3f} "
                f"({mtls:,.0f} vs {plain:,.0f} rps on one connection); "
                f"{mtls_conn / plain_conn:.3f} with a new connection per call"
            )
        finally:
            await server.stop(None)


def main(
    seconds: Annotated[float, typer.Option(help="length of each ghz run")] = 10.0,
    concurrency: Annotated[int, typer.Option(help="ghz workers")] = 50,
    rounds: Annotated[int, typer.Option(help="runs of each kind, alternating")] = 2,
    handshake_seconds: Annotated[
        float, typer.Option(help="length of each new-connection-per-call run")
    ] = 5.0,
) -> None:
    asyncio.run(run(seconds, concurrency, rounds, handshake_seconds))


if __name__ == "__main__":
    typer.run(main)
