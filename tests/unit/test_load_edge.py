"""The load harness's REST edge without a system: the client credentials token, the calls
as the gateway would answer them (httpx's MockTransport), the edge profile, the
comparison's arithmetic, hey's report, and the commands docs/load-tests.md and
docs/performance.md show."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from loadgen import edge
from loadgen.driver import Recorder
from loadgen.rest import ClientToken, RestCalls, jwt_claims
from loadgen.settings import (
    BROWSE,
    CLIENT,
    GRPC,
    MIXED,
    PROFILES,
    REST,
    STEADY_SAGA,
    ScenarioSettings,
    edge_pair,
    resolve,
)
from perf.bench.edge_tools import parse_hey
from shared.settings import REPO_ROOT
from tests.support.make import make_dry_run

Handler = Callable[[httpx.Request], httpx.Response]
SUB = "6f1c8a52-58e4-5d5e-9a55-4b1b0d3f4c11"


def jwt(sub: str = SUB) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256'})}.{part({'sub': sub, 'scope': 'orders:write'})}.sig"


def token_endpoint(seen: list[httpx.Request], expires_in: int = 900) -> Handler:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"access_token": jwt(), "expires_in": expires_in})

    return handle


async def test_the_token_comes_from_the_client_credentials_grant_with_basic_auth() -> None:
    seen: list[httpx.Request] = []
    token = ClientToken(
        "http://gw/", "loadgen", "s3cret", httpx.MockTransport(token_endpoint(seen))
    )

    assert await token.get() == jwt()
    assert await token.get() == jwt()  # kept: one fetch
    [request] = seen
    assert request.method == "POST" and request.url.path == "/oauth2/token"
    assert (
        request.headers["authorization"] == "Basic " + base64.b64encode(b"loadgen:s3cret").decode()
    )
    assert request.content == b"grant_type=client_credentials"
    buyer = await token.buyer()
    assert (buyer.email, buyer.user_id) == ("oauth-client:loadgen", SUB)
    assert jwt_claims(buyer.token)["sub"] == SUB


async def test_the_token_is_fetched_again_before_it_expires(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[httpx.Request] = []
    token = ClientToken("http://gw", "loadgen", "s", httpx.MockTransport(token_endpoint(seen)))
    clock = [1000.0]
    monkeypatch.setattr("loadgen.rest.time.monotonic", lambda: clock[0])
    await token.get()
    clock[0] += 900 - 61  # a minute and a second before its 15 minutes are up: still good
    await token.get()
    assert len(seen) == 1
    clock[0] += 2  # within the last minute: the next one
    await asyncio.gather(token.get(), token.get(), token.get())  # one fetch for all three
    assert len(seen) == 2 and token.fetched == 2


async def test_a_refused_grant_says_so() -> None:
    def refuse(_: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"error": "invalid_client"})

    token = ClientToken("http://gw", "loadgen", "wrong", httpx.MockTransport(refuse))
    with pytest.raises(RuntimeError, match="invalid_client"):
        await token.get()


def rest_calls(handler: Handler) -> tuple[RestCalls, Recorder]:
    seen: list[httpx.Request] = []
    token = ClientToken("http://gw", "loadgen", "s", httpx.MockTransport(token_endpoint(seen)))
    http = httpx.AsyncClient(base_url="http://gw", transport=httpx.MockTransport(handler))
    recorder = Recorder(origin=asyncio.get_running_loop().time())
    return RestCalls(http, token, recorder), recorder


SSE = (
    b'event: status\nid: 1\ndata: {"order_id":"o1","status":"pending","status_reason":""}\n\n'
    b": keep-alive\n\n"
    b'event: status\nid: 2\ndata: {"order_id":"o1","status":"confirmed","status_reason":""}\n\n'
)


async def test_an_order_is_placed_with_its_key_retried_and_followed_to_its_end() -> None:
    posts: list[httpx.Request] = []

    def gateway(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            posts.append(request)
            if len(posts) == 1:  # a restart under the first attempt
                return httpx.Response(503, json={"type": "unavailable"})
            return httpx.Response(201, json={"order_id": "o1", "status": "pending"})
        assert request.url.path == "/api/v1/orders/o1/events"
        return httpx.Response(200, content=SSE, headers={"content-type": "text/event-stream"})

    calls, recorder = rest_calls(gateway)
    started = asyncio.get_running_loop().time()
    body = {"items": [{"product_id": "p", "quantity": 1}]}
    order_id = await calls.place_order(body, "load-run-7", started)
    state = await calls.follow_order("o1", started, deadline=5)

    assert (order_id, state) == ("o1", "CONFIRMED")
    assert [p.headers["idempotency-key"] for p in posts] == ["load-run-7", "load-run-7"]
    assert all(p.headers["authorization"] == f"Bearer {jwt()}" for p in posts)
    assert recorder.retried["PlaceOrder"] == 1
    assert [c.code for c in recorder.calls["PlaceOrder"]] == ["OK"]
    assert [c.code for c in recorder.calls["WatchOrder"]] == ["OK"]
    [saga] = recorder.sagas
    assert saga.state == "CONFIRMED" and saga.latency is not None


async def test_a_refusal_is_recorded_as_its_status_and_never_raised() -> None:
    def limited(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, json={"type": "rate-limited"}, headers={"Retry-After": "1"})

    calls, recorder = rest_calls(limited)
    loop = asyncio.get_running_loop()
    assert await calls.get_product("p", loop.time()) is False
    assert await calls.place_order({"items": []}, "k", loop.time()) is None  # 429: not retried
    assert [c.code for c in recorder.calls["GetProduct"]] == ["HTTP_429"]
    assert [c.code for c in recorder.calls["PlaceOrder"]] == ["HTTP_429"]


def test_rest_buys_as_the_client_alone_and_has_the_order_path_and_browsing_only() -> None:
    with pytest.raises(ValueError, match="identity client"):
        ScenarioSettings(BROWSE, rate=1, duration=1, users=1, via=REST)
    with pytest.raises(ValueError, match="users must be 1"):
        ScenarioSettings(BROWSE, rate=1, duration=1, identity=CLIENT)
    with pytest.raises(ValueError, match="no REST form"):
        ScenarioSettings(MIXED, rate=1, duration=1, users=1, identity=CLIENT, via=REST)
    grpc, rest = edge_pair(ScenarioSettings(STEADY_SAGA, rate=3, duration=2, seed=9))
    assert (grpc.via, rest.via, grpc.identity, rest.users) == (GRPC, REST, CLIENT, 1)
    assert (grpc.label, rest.label) == ("steady-saga", "steady-saga-rest")
    assert (grpc.rate, grpc.seed) == (rest.rate, rest.seed) == (3, 9)


def test_the_edge_profile_runs_each_scenario_over_grpc_then_rest() -> None:
    profile = PROFILES["edge"]
    assert [(s.scenario, s.via) for s in profile] == [
        (BROWSE, GRPC), (BROWSE, REST), (STEADY_SAGA, GRPC), (STEADY_SAGA, REST)
    ]  # fmt: skip
    # One buyer meets the services' per-caller limit (100/s a method) past it.
    assert all(s.rate < 100 for s in profile)
    assert {s.rate for s in resolve("edge", rate=7)} == {7}


def report(via: str, p50: float, qps: float, offered: float = 10.0) -> dict[str, Any]:
    figures = {"qps": qps, "offered_qps": offered, "p50_ms": p50, "p95_ms": 2 * p50}
    figures["p99_ms"] = 3 * p50
    settings = {"scenario": BROWSE, "rate": 10, "duration": 2, "seed": 1, "via": via}
    return {
        "settings": settings,
        "rpcs": {"GetProduct": figures},
        "saga": None,
        "files": {"json": f"{via}.json"},
        "audit": {"ok": True},
        "edge": {"rate_limited": 3 if via == REST else 0},
        "load": {"generator_cpu_ms_per_arrival": 2.0 if via == REST else 1.0},
    }


def test_the_comparison_is_rest_minus_grpc_and_the_share_served_averaged_over_rounds() -> None:
    runs = [report(GRPC, 2, 10), report(REST, 5, 9), report(REST, 7, 8), report(GRPC, 4, 10)]
    [(name, found)] = edge.compare(runs).items()
    row = found["rpcs"]["GetProduct"]
    assert name == BROWSE and found["pairs"] == 2
    assert row["grpc"]["p50_ms"] == 3 and row["rest"]["p50_ms"] == 6
    assert row["added_ms"] == {"p50_ms": 3, "p95_ms": 6, "p99_ms": 9}
    assert row["throughput_ratio"] == pytest.approx(0.85)
    assert found["generator_cpu_ms_per_arrival"] == {"grpc": 1.0, "rest": 2.0}
    [line, cpu, warning] = edge.lines(edge.compare(runs))
    assert cpu.endswith("own CPU per arrival: gRPC 1.0 ms, REST 2.0 ms")
    assert line.startswith("edge: browse GetProduct: gRPC 10.0/s p50/p95/p99 3.0/6.0/9.0 ms")
    assert "REST adds +3.0/+6.0/+9.0 ms · throughput ratio 0.85" in line
    assert "refused 6 requests (429)" in warning
    assert edge.compare([report(GRPC, 2, 10)]) == {}


HEY_REPORT = """
Summary:
  Total:\t5.0031 secs
  Requests/sec:\t1954.1930

Latency distribution:
  10%% in 0.0052 secs
  50%% in 0.0094 secs
  95%% in 0.0210 secs
  99%% in 0.0318 secs

Status code distribution:
  [200]\t9770 responses

Error distribution:
  [12]\tGet "http://127.0.0.1:8080/x": context deadline exceeded (Client.Timeout exceeded)
  [2]\tGet "http://127.0.0.1:8080/x": dial tcp 127.0.0.1:8080: connect: connection refused
"""


def test_heys_report_is_read_and_its_cut_off_requests_are_no_failures() -> None:
    found = parse_hey(HEY_REPORT)
    assert (found["rps"], found["p50_ms"], found["p95_ms"], found["p99_ms"]) == (
        1954.2, 9.4, 21.0, 31.8
    )  # fmt: skip
    assert found["statuses"] == {200: 9770} and found["count"] == 9770
    [(message, count)] = found["errors"].items()
    assert "connection refused" in message and count == 2
    assert parse_hey(HEY_REPORT.replace("  99%% in 0.0318 secs\n", ""))["p99_ms"] is None


def test_the_commands_the_pages_show_are_these_targets() -> None:
    load_page = (REPO_ROOT / "docs" / "load-tests.md").read_text()
    performance = (REPO_ROOT / "docs" / "performance.md").read_text()
    assert "make load PROFILE=edge " in load_page and "make bench-edge " in performance
    assert make_dry_run("load", "PROFILE=edge").endswith("-m loadgen --profile edge")
    assert make_dry_run("bench-edge").endswith("-m perf.bench.edge")
