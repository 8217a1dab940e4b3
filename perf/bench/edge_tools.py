"""The tools `make bench-edge` measures capacity with: ghz for gRPC, hey for HTTP.

Both are closed loops at saturation (a fixed number of workers, each sending its next
request when the last one is answered): what each edge serves at most, and its latency
there. ghz sends over one HTTP/2 connection, as a gRPC client does; hey keeps one
HTTP/1.1 keep-alive connection per worker, as an HTTP client pool does. Each returns
requests per second and P50/P95/P99 in milliseconds.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

from devstack.stack import Stack
from perf.bench.tls import ghz_report
from shared import tls
from shared.settings import REPO_ROOT

HEY = REPO_ROOT / ".stack" / "tools" / "bin" / "hey"
# hey's text report: "Requests/sec:\t2954.1930", "  50% in 0.0094 secs", "  [200]\t14780 responses".
HEY_RPS = re.compile(r"Requests/sec:\s+([0-9.]+)")
HEY_PERCENTILE = re.compile(r"^\s*(\d+)%+ in ([0-9.]+) secs", re.M)
HEY_STATUS = re.compile(r"^\s*\[(\d+)\]\s+(\d+) responses", re.M)
HEY_ERROR = re.compile(r"^\s*\[(\d+)\]\s+(.+)$", re.M)
# At the end of a timed run hey cancels what is still in flight: those are no failures.
CANCELLED_AT_THE_END = ("context canceled", "request canceled", "context deadline exceeded")


def figures(rps: float, percentiles_ms: dict[int, float], **extra: Any) -> dict[str, Any]:
    """rps and P50/P95/P99 in ms; a percentile the tool did not print is None (hey prints
    its 99th only from 100 requests on)."""
    found = {
        f"p{p}_ms": round(percentiles_ms[p], 3) if p in percentiles_ms else None
        for p in (50, 95, 99)
    }
    return {"rps": round(rps, 1), **found, **extra}


def ghz_args(stack: Stack, service: str, address: str, token: str) -> list[str]:
    """Reflection for the schema, mTLS as the operator, the token in metadata."""
    return [
        f"--cacert={tls.ca_file(stack.tls_dir)}",
        f"--cert={tls.cert_file(stack.tls_dir, tls.OPERATOR)}",
        f"--key={tls.key_file(stack.tls_dir, tls.OPERATOR)}",
        f"--cname={service}",
        f"--metadata={json.dumps({'authorization': f'Bearer {token}'})}",
        address,
    ]


async def ghz(args: list[str], call: str, data: str, seconds: float, concurrency: int) -> Any:
    report = await ghz_report(args, seconds, concurrency, call, data)
    latencies = {d["percentage"]: d["latency"] / 1e6 for d in report["latencyDistribution"]}
    return figures(float(report["rps"]), latencies, count=int(report["count"]))


def parse_hey(text: str) -> dict[str, Any]:
    """hey's report: rps, percentiles, answers by status, and the errors that count."""
    rps = HEY_RPS.search(text)
    if rps is None:
        raise RuntimeError(f"hey printed no Requests/sec: {text[-500:]}")
    percentiles = {int(p): float(s) * 1000 for p, s in HEY_PERCENTILE.findall(text)}
    statuses = {int(code): int(n) for code, n in HEY_STATUS.findall(text)}
    errors_part = text.partition("Error distribution:")[2]
    errors = {
        message.strip(): int(n)
        for n, message in HEY_ERROR.findall(errors_part)
        if not any(c in message for c in CANCELLED_AT_THE_END)
    }
    return figures(
        float(rps.group(1)),
        percentiles,
        count=sum(statuses.values()),
        statuses=statuses,
        errors=errors,
    )


async def hey(url: str, token: str, seconds: float, concurrency: int, hey: Path = HEY) -> Any:
    """GET ``url`` with the token, for ``seconds``, from ``concurrency`` workers; raises if
    any answer was not a 200 or a request failed (other than those cut off at the end)."""
    process = await asyncio.create_subprocess_exec(
        str(hey),
        "-z",
        f"{seconds}s",
        "-c",
        str(concurrency),
        "-H",
        f"Authorization: Bearer {token}",
        "-disable-compression",
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"hey failed: {err.decode()}{out.decode()[:500]}")
    found = parse_hey(out.decode())
    bad = {code: n for code, n in found["statuses"].items() if code != 200}
    if bad or found["errors"]:
        raise RuntimeError(f"hey saw failures: {bad} {found['errors']}")
    return found
