"""The edge fuzzer: REST routes (from docs/openapi.json) and the OAuth2 endpoints, through a
real gateway over real services (edge_system.py), one request at a time.

For every request (``EdgeFuzzer.exercise``): the snapshot of every database before
(each outbox drained first), the request, the snapshot after a refusal, the gateway's
Idempotency-Key rows, then the properties of edge_checks.py. Hypothesis runs in a
worker thread, one run per target (an OpenAPI operation, the unrouted paths, an OAuth2
endpoint); each example is sent on the services' event loop; a broken property raises
a ``PropertyFailed`` per kind of failure, which Hypothesis shrinks. ``after_run``
then checks what no single request shows (edge_audit.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
from hypothesis import HealthCheck, Phase, Verbosity, assume, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from shop.user.v1 import user_pb2, user_pb2_grpc
from tests.fuzz import oauth_cases, rest_cases
from tests.fuzz.edge_checks import HTTP_DEADLINE, Answer, Registered, Rows, Violation, check
from tests.fuzz.edge_system import GATEWAY_DB, ISSUER, EdgeSystem
from tests.fuzz.harness import Failure, RpcStats, Snapshot, _failure_type, _normalise
from tests.fuzz.harness import _property_failures as property_failures
from tests.fuzz.http_call import HttpCall
from tests.fuzz.oauth_flows import EMAIL, PASSWORD, FlowFailed, Flows

UNSENDABLE = -1
STREAM_SECONDS = 1.0  # how long an event stream is read before the fuzzer hangs up
Target = tuple[str, st.SearchStrategy[HttpCall]]


@dataclass
class Exchange:
    call: HttpCall
    answer: Answer
    rows: Rows
    found: list[Violation]


class EdgeFuzzer:
    """``fuzzer = EdgeFuzzer(system); await fuzzer.prepare(); await fuzzer.run(...)``."""

    def __init__(self, system: EdgeSystem) -> None:
        self.system = system
        self.stats: dict[str, RpcStats] = {}
        self.registered = Registered(ISSUER, system.redirect_uris)
        self._http: httpx.AsyncClient | None = None
        self._flows: Flows | None = None
        self._aim: rest_cases.Aim | None = None

    @property
    def http(self) -> httpx.AsyncClient:
        assert self._http is not None, "prepare() first"
        return self._http

    async def prepare(self) -> None:
        self._http = httpx.AsyncClient(base_url=self.system.url, timeout=HTTP_DEADLINE)
        user = user_pb2_grpc.UserServiceStub(self.system.services.running["user"].channel)
        await user.Register(user_pb2.RegisterRequest(email=EMAIL, password=PASSWORD))
        test_token = (self.system.principals[1].authorization or "").removeprefix("Bearer ")
        self._flows = Flows(self.http, ISSUER, self.system.client_secrets["storefront"], test_token)
        self._aim = await self._aim_from_seed()

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()

    async def _aim_from_seed(self) -> rest_cases.Aim:
        s = self.system
        ids, skus = s.strings("product_id"), s.strings("sku")
        products = [
            (sku, pid)
            for sku, pid in zip(skus, ids, strict=False)
            if sku.startswith(("DEMO", "FUZZ"))
        ]
        admin = next(p for p in s.principals if p.name == "admin")
        customer = next(p for p in s.principals if p.name == "customer")
        on_sale = next(pid for sku, pid in products if sku.startswith("DEMO"))
        placed = await self.http.post(
            "/api/v1/orders",
            json={"items": [{"product_id": on_sale, "quantity": 1}]},
            headers={"Authorization": admin.authorization or "", "Idempotency-Key": "fuzz-admin-1"},
        )
        assert placed.status_code == 201, placed.text
        tokens = list(s.strings("page_token"))
        for path, who in (
            ("/api/v1/products?page_size=1", None),
            ("/api/v1/orders?page_size=1", customer),
        ):
            headers = {"Authorization": who.authorization or ""} if who else {}
            page = await self.http.get(path, headers=headers)
            assert page.status_code == 200, page.text
            tokens.append(page.json()["next_page_token"] or "")
        settings_ = self.system.server.settings if self.system.server else None
        return rest_cases.Aim(
            principals=s.principals,
            products=products,
            product_ids=ids,
            skus=skus,
            order_ids=[*s.strings("order_id"), placed.json()["order_id"]],
            page_tokens=[t for t in tokens if t],
            max_body_bytes=settings_.max_body_bytes if settings_ else 65_536,
        )

    def targets(self) -> list[Target]:
        assert self._aim is not None, "prepare() first"
        aim = self._aim
        rest: list[Target] = [
            (rest_cases.label_of(op), rest_cases.calls(op, aim)) for op in rest_cases.operations()
        ]
        rest.append(("ANY /api/v1/(unrouted)", rest_cases.unrouted(aim)))
        oauth_aim = oauth_cases.OAuthAim(
            ISSUER, self.system.redirect_uris, self.system.client_secrets
        )
        return rest + oauth_cases.targets(oauth_aim)

    # --- one request ---

    async def snapshot(self) -> Snapshot:
        taken: Snapshot = {}
        for name, database in self.system.databases.items():
            if not await database.wait_relay_idle():
                raise RuntimeError(f"the outbox of {name} is not drained: is Kafka up?")
            taken.update({f"{name}:{t}": v for t, v in (await database.snapshot()).items()})
        return taken

    async def send(self, call: HttpCall) -> Answer:
        url = call.path
        if call.query:
            url += "?" + "&".join(f"{_q(k)}={_q(v)}" for k, v in call.query)
        content: bytes | AsyncIterator[bytes] | None = call.body
        if call.chunked and call.body is not None:
            content = _chunks(call.body)
        started = time.monotonic()
        try:
            request = self.http.build_request(
                call.method,
                url,
                headers=[(k.encode(), v) for k, v in call.headers],
                content=content,
            )
            reply = await self.http.send(request, stream=True)
        except httpx.TimeoutException:
            return Answer(0, [], b"", time.monotonic() - started, timed_out=True)
        except (httpx.LocalProtocolError, httpx.InvalidURL):  # no client sends it: not a case
            return Answer(UNSENDABLE, [], b"", 0.0)
        try:
            body = await _read(reply, STREAM_SECONDS if _is_stream(reply) else HTTP_DEADLINE)
        finally:
            await reply.aclose()
            self.http.cookies.clear()
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in reply.headers.raw]
        return Answer(reply.status_code, headers, body, time.monotonic() - started)

    async def _kept(self, call: HttpCall, since: Any) -> tuple[int, list[tuple[str, int | None]]]:
        """Keys left in flight, and the rows the call's keys claimed since it was sent."""
        conn = self.system.databases[GATEWAY_DB].conn
        in_flight = await conn.fetchval(
            "SELECT count(*) FROM idempotency_keys WHERE status = 'in_flight'"
        )
        keys = [v.decode("latin-1") for k, v in call.headers if k.lower() == "idempotency-key"]
        rows = await conn.fetch(
            "SELECT status, response_status FROM idempotency_keys WHERE key = ANY($1::text[])"
            " AND created_at >= $2",
            keys,
            since,
        )
        return int(in_flight), [(r["status"], r["response_status"]) for r in rows]

    async def exercise(self, call: HttpCall) -> Exchange:
        started = time.monotonic()
        assert self._flows is not None
        try:
            call = await self._flows.resolve(call)
        except FlowFailed:
            call = await self._flows.resolve(call)  # a session a fuzzed logout ended: anew
        before: Snapshot = await self.snapshot() if call.is_api else {}
        since = await self.system.databases[GATEWAY_DB].conn.fetchval("SELECT clock_timestamp()")
        answer = await self.send(call)
        if answer.status == UNSENDABLE:
            return Exchange(call, answer, Rows(before, before), [])
        refused = 400 <= answer.status < 500
        after = await self.snapshot() if call.is_api and refused else before
        in_flight, kept = await self._kept(call, since) if call.is_api else (0, [])
        rows = Rows(before, after, in_flight, kept)
        found = check(call, answer, rows, self.registered)
        stats = self.stats.setdefault(call.label, RpcStats())
        stats.requests += 1
        stats.codes[str(answer.status) if not answer.timed_out else "timeout"] += 1
        stats.seconds += time.monotonic() - started
        return Exchange(call, answer, rows, found)

    # --- Hypothesis ---

    def _fuzz_one(
        self, loop: asyncio.AbstractEventLoop, target: Target, examples: int, seed: int
    ) -> list[Failure]:
        label, strategy = target

        def test(call: HttpCall) -> None:
            exchange = asyncio.run_coroutine_threadsafe(self.exercise(call), loop).result()
            assume(exchange.answer.status != UNSENDABLE)
            if exchange.found:
                raise failure(label, exchange)

        run = settings(
            max_examples=examples, database=None, deadline=None,
            phases=(Phase.generate, Phase.shrink), suppress_health_check=list(HealthCheck),
            verbosity=Verbosity.quiet,
            report_multiple_bugs=True, print_blob=False,
        )(given(strategy)(test))  # fmt: skip
        try:
            hypothesis_seed(seed)(run)()
        except BaseException as error:  # sorted out by property_failures
            return property_failures(error)
        return []

    async def run(
        self, *, examples: int, seed: int, minutes: float = 0.0,
        targets: Sequence[Target] | None = None, progress: Callable[[str], None] | None = None,
    ) -> list[Failure]:  # fmt: skip
        """``examples`` per target, round after round until ``minutes`` are up (one round at
        least); every distinct failure, shrunk."""
        loop = asyncio.get_running_loop()
        chosen = list(targets or self.targets())
        ends = time.monotonic() + minutes * 60
        found: dict[tuple[str, ...], Failure] = {}
        round_ = 0
        while round_ == 0 or time.monotonic() < ends:
            for index, target in enumerate(chosen):
                if round_ and time.monotonic() >= ends:
                    break
                round_seed = (seed * 1_000_003 + round_ * 1_009 + index) % 2**32
                for f in await asyncio.to_thread(
                    self._fuzz_one, loop, target, examples, round_seed
                ):
                    found.setdefault(f.key, f)
            round_ += 1
            if progress is not None:
                sent = sum(s.requests for s in self.stats.values())
                progress(f"edge round {round_}: {sent} requests so far, {len(found)} failures")
        return list(found.values())

    def report(self) -> str:
        lines = [f"{'route':<44} {'requests':>8} {'seconds':>8}  status codes"]
        for label in sorted(self.stats):
            s = self.stats[label]
            codes = " · ".join(f"{code} {n}" for code, n in s.codes.most_common())
            lines.append(f"{label:<44} {s.requests:>8} {s.seconds:>8.1f}  {codes}")
        total = sum(s.requests for s in self.stats.values())
        lines.append(
            f"{'total':<44} {total:>8} {sum(s.seconds for s in self.stats.values()):>8.1f}"
        )
        return "\n".join(lines)


def failure(label: str, exchange: Exchange) -> AssertionError:
    answer, call = exchange.answer, exchange.call
    result = Failure(
        prop=exchange.found[0].prop, rpc=label, caller=call.caller,
        code=str(answer.status), details=answer.text[:2000], request=call.describe(),
        notes=[f"{v.prop}: {v.summary}" for v in exchange.found],
        full_request=call.describe(limit=10**9),
    )  # fmt: skip
    kinds = "|".join(sorted({v.prop + ":" + _normalise(v.summary) for v in exchange.found}))
    return _failure_type(f"{label}|{answer.status}|{kinds}")(result)


def _q(text: str) -> str:
    return quote(text, safe="", errors="surrogatepass")


async def _chunks(body: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(body), 16_384):
        yield body[start : start + 16_384]


def _is_stream(reply: httpx.Response) -> bool:
    return reply.headers.get("content-type", "").startswith("text/event-stream")


async def _read(reply: httpx.Response, seconds: float) -> bytes:
    chunks: list[bytes] = []
    try:
        async with asyncio.timeout(seconds):
            async for chunk in reply.aiter_raw():
                chunks.append(chunk)
    except TimeoutError:
        if not _is_stream(reply):
            raise
    return b"".join(chunks)
