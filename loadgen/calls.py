"""The measured calls: through the shop's own discovery client, timed, never raising.

Every call goes through ``ServiceClients.call`` (etcd discovery, round-robin,
UNAVAILABLE retried on another instance), exactly as a service calls a peer.
Each call is recorded once, as OK or its status code; the caller gets the reply
or None.

PlaceOrder is retried on top of that, as a real client would: the client's own
retries stop at ``retry.max_attempts`` and its retry budget, both spent within a
second when a dependency restarts, so PlaceOrder is tried again with the same
idempotency key (one order, however many attempts) on UNAVAILABLE or
DEADLINE_EXCEEDED until ``PLACE_ORDER_DEADLINE`` has passed since the first
attempt. It counts as failed only if it still fails then. A WatchOrder stream
that breaks (its instance died) is opened again until the order's deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from loadgen.driver import Recorder
from shared.errors import DomainError
from shared.rpc.client import ServiceClients
from shared.rpc.status import status_code
from shop.order.v1 import order_pb2, order_pb2_grpc

T = TypeVar("T")

UNARY_DEADLINE = 5.0
# PlaceOrder's attempts together: long enough to ride out a restart healed within 5 s.
PLACE_ORDER_DEADLINE = 12.0
PLACE_ORDER_RETRIED = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED"})
RETRY_PAUSE = 0.1
MAX_RETRY_PAUSE = 1.0
REWATCH_PAUSE = 0.25
CHECK = "Health/Check"
TERMINAL = {
    order_pb2.ORDER_STATUS_CONFIRMED: "CONFIRMED",
    order_pb2.ORDER_STATUS_REJECTED: "REJECTED",
    order_pb2.ORDER_STATUS_CANCELLED: "CANCELLED",
}
_HEALTH_REQUEST = health_pb2.HealthCheckRequest(service="")


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


class Calls:
    def __init__(self, clients: ServiceClients, recorder: Recorder) -> None:
        self._clients = clients
        self.recorder = recorder
        # Stubs are rebuilt per call by ServiceClients' contract; caching them keeps
        # the generator's own cost per call low (the baseline pays the same).
        self._stubs: dict[tuple[type, grpc.aio.Channel], Any] = {}

    def _stub(self, stub_type: type) -> Callable[[grpc.aio.Channel], Any]:
        def make(channel: grpc.aio.Channel) -> Any:
            key = (stub_type, channel)
            stub = self._stubs.get(key)
            if stub is None:
                stub = self._stubs[key] = stub_type(channel)
            return stub

        return make

    async def timed(self, rpc: str, started: float, call: Awaitable[T]) -> T | None:
        """Awaits ``call``, recording it as ``rpc`` from ``started`` (a loop time)."""
        loop = asyncio.get_running_loop()
        code = "CANCELLED"
        try:
            reply = await call
            code = "OK"
            return reply
        except grpc.aio.AioRpcError as error:
            code = error.code().name
            return None
        except DomainError as error:  # no instance registered at all
            code = status_code(error).name
            return None
        finally:
            self.recorder.call(rpc, started, loop.time(), code)

    async def unary(
        self,
        service: str,
        stub_type: type,
        method: str,
        request: Any,
        token: str,
        *,
        started: float | None = None,
    ) -> Any:
        """One unary call, recorded under ``method``; latency from ``started`` if given."""
        metadata = bearer(token)

        def invoke(stub: Any) -> Awaitable[Any]:
            result: Awaitable[Any] = getattr(stub, method)(
                request, timeout=UNARY_DEADLINE, metadata=metadata
            )
            return result

        begin = asyncio.get_running_loop().time() if started is None else started
        return await self.timed(
            method, begin, self._clients.call(service, self._stub(stub_type), invoke)
        )

    async def check(self, service: str, started: float) -> bool:
        """The bare RPC: health Check on an instance of ``service``, no token."""

        def invoke(stub: Any) -> Awaitable[Any]:
            result: Awaitable[Any] = stub.Check(_HEALTH_REQUEST, timeout=UNARY_DEADLINE)
            return result

        call = self._clients.call(service, self._stub(health_pb2_grpc.HealthStub), invoke)
        return await self.timed(CHECK, started, call) is not None

    async def place_order(
        self, request: order_pb2.PlaceOrderRequest, token: str, started: float
    ) -> order_pb2.PlaceOrderResponse | None:
        """PlaceOrder, retried with the same request (same idempotency key) as the module
        says; recorded once, from ``started``, with the last attempt's outcome."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PLACE_ORDER_DEADLINE
        metadata = bearer(token)
        stub = self._stub(order_pb2_grpc.OrderServiceStub)
        pause = RETRY_PAUSE
        code = "CANCELLED"
        try:
            while True:
                left = deadline - loop.time()

                def invoke(s: Any, left: float = left) -> Awaitable[Any]:
                    call: Awaitable[Any] = s.PlaceOrder(
                        request, timeout=min(UNARY_DEADLINE, left), metadata=metadata
                    )
                    return call

                try:
                    reply: order_pb2.PlaceOrderResponse = await self._clients.call(
                        "order", stub, invoke
                    )
                    code = "OK"
                    return reply
                except grpc.aio.AioRpcError as error:
                    code = error.code().name
                except DomainError as error:  # no order instance registered right now
                    code = status_code(error).name
                if code not in PLACE_ORDER_RETRIED or deadline - loop.time() <= pause:
                    return None
                self.recorder.retried["PlaceOrder"] += 1
                await asyncio.sleep(pause)
                pause = min(pause * 2, MAX_RETRY_PAUSE)
        finally:
            self.recorder.call("PlaceOrder", started, loop.time(), code)

    async def follow_order(
        self, order_id: str, token: str, placed_at: float, deadline: float
    ) -> str:
        """WatchOrder until a terminal status; records the stream and the saga.

        The WatchOrder call is recorded once: its latency is the time to the first
        message (the order as it is now), its code how the last stream ended. A stream
        that ends before a terminal status is opened again until ``deadline`` seconds
        have passed. Returns the terminal state's name, or UNFINISHED.
        """
        loop = asyncio.get_running_loop()
        metadata = bearer(token)
        request = order_pb2.WatchOrderRequest(order_id=order_id)
        started = loop.time()
        give_up = started + deadline
        first_message: float | None = None
        terminal: str | None = None
        terminal_at: float | None = None
        reason = ""

        async def watch(stub: Any) -> None:
            nonlocal first_message, terminal, terminal_at, reason
            left = max(0.001, give_up - loop.time())
            stream = stub.WatchOrder(request, timeout=left, metadata=metadata)
            async for reply in stream:
                if first_message is None:
                    first_message = loop.time()
                state = TERMINAL.get(reply.order.status)
                if state is not None and terminal is None:
                    terminal, terminal_at = state, loop.time()
                    reason = reply.order.status_reason

        code = "CANCELLED"
        try:
            while terminal is None and loop.time() < give_up:
                try:
                    await self._clients.call(
                        "order", self._stub(order_pb2_grpc.OrderServiceStub), watch
                    )
                    code = "OK"
                except grpc.aio.AioRpcError as error:
                    code = error.code().name
                    if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                        break
                except DomainError as error:
                    code = status_code(error).name
                if terminal is None:
                    await asyncio.sleep(REWATCH_PAUSE)
        finally:
            self.recorder.call(
                "WatchOrder", started, first_message if first_message else loop.time(), code
            )
            self.recorder.saga(placed_at, terminal_at, terminal or "UNFINISHED", reason)
        return terminal or "UNFINISHED"
