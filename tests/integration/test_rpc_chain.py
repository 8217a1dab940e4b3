"""The interceptor chain on a real grpc.aio server: every RPC shape, every failure kind.

A throwaway server (no service, no stack) hosts one method of each shape with
the production chain in front, so what is checked is the chain itself.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any, TypeAlias

import asyncpg
import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2

from shared.auth.identity import Role, current_identity
from shared.auth.keys import load_public_key
from shared.auth.tokens import TokenVerifier
from shared.errors import NotFound, Unauthenticated
from shared.rpc.interceptors.auth import OPERATOR_ONLY, Access, AccessPolicy
from shared.rpc.interceptors.chain import default_chain
from shared.rpc.status import ERROR_ID_KEY, FIELD_KEY, REASON_KEY
from tests.support.tokens import AUDIENCE, ISSUER, TestKeys, bearer

SERVICE = "test.chain.v1.Chain"
Request: TypeAlias = health_pb2.HealthCheckRequest
Reply: TypeAlias = health_pb2.HealthCheckResponse
SERVING = health_pb2.HealthCheckResponse.SERVING


def _reply_for(request: Request) -> Reply:
    """Misbehaves on demand: the request's ``service`` field says how."""
    if request.service == "not-found":
        raise NotFound("no such thing")
    if request.service == "bug":
        raise KeyError("secret_column")  # a bug: must never reach the caller
    if request.service == "db-down":
        raise asyncpg.exceptions.CannotConnectNowError("the database system is starting up")
    return Reply(status=SERVING)


async def unary(request: Request, context: grpc.aio.ServicerContext) -> Reply:
    current_identity()  # the interceptor made the caller current
    return _reply_for(request)


async def public(request: Request, context: grpc.aio.ServicerContext) -> Reply:
    """SERVING only if no caller is current: a public call must not see another's."""
    try:
        current_identity()
    except Unauthenticated:
        return Reply(status=SERVING)
    return Reply(status=health_pb2.HealthCheckResponse.NOT_SERVING)


async def server_stream(
    request: Request, context: grpc.aio.ServicerContext
) -> AsyncIterator[Reply]:
    for _ in range(3):
        yield _reply_for(request)


async def client_stream(
    requests: AsyncIterator[Request], context: grpc.aio.ServicerContext
) -> Reply:
    replies = [_reply_for(r) async for r in requests]
    return Reply(status=SERVING if len(replies) == 3 else health_pb2.HealthCheckResponse.UNKNOWN)


async def bidi(
    requests: AsyncIterator[Request], context: grpc.aio.ServicerContext
) -> AsyncIterator[Reply]:
    async for request in requests:
        yield _reply_for(request)


def _handlers() -> grpc.GenericRpcHandler:
    kw: dict[str, Any] = {
        "request_deserializer": Request.FromString,
        "response_serializer": Reply.SerializeToString,
    }
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary, **kw),
            "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream, **kw),
            "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream, **kw),
            "Bidi": grpc.stream_stream_rpc_method_handler(bidi, **kw),
            "Public": grpc.unary_unary_rpc_method_handler(public, **kw),
            "OperatorOnly": grpc.unary_unary_rpc_method_handler(unary, **kw),
        },
    )


@pytest_asyncio.fixture(loop_scope="session")
async def channel(keys: TestKeys) -> AsyncIterator[grpc.aio.Channel]:
    verifier = TokenVerifier([load_public_key(keys.public_key_file)], ISSUER, AUDIENCE)
    policy = AccessPolicy(
        {f"/{SERVICE}/Public": Access.PUBLIC},
        parties={f"/{SERVICE}/OperatorOnly": OPERATOR_ONLY},
    )
    server = grpc.aio.server(interceptors=default_chain(verifier, policy))
    server.add_generic_rpc_handlers((_handlers(),))
    port = server.add_insecure_port("127.0.0.1:0")  # a test server, not a service port
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        yield ch
    await server.stop(None)


def _calls(channel: grpc.aio.Channel) -> dict[str, Any]:
    kw: dict[str, Any] = {
        "request_serializer": Request.SerializeToString,
        "response_deserializer": Reply.FromString,
    }
    return {
        "Unary": channel.unary_unary(f"/{SERVICE}/Unary", **kw),
        "ServerStream": channel.unary_stream(f"/{SERVICE}/ServerStream", **kw),
        "ClientStream": channel.stream_unary(f"/{SERVICE}/ClientStream", **kw),
        "Bidi": channel.stream_stream(f"/{SERVICE}/Bidi", **kw),
    }


async def _invoke(
    channel: grpc.aio.Channel, shape: str, service: str, metadata: Any, count: int = 1
) -> list[Reply]:
    """``count`` requests on a client stream; more than one only where none fails, or
    the client's next write races the server's abort."""
    call = _calls(channel)[shape]
    request = Request(service=service)
    if shape == "Unary":
        return [await call(request, metadata=metadata, timeout=5)]
    if shape == "ServerStream":
        return [r async for r in call(request, metadata=metadata, timeout=5)]
    if shape == "ClientStream":
        return [await call(iter([request] * count), metadata=metadata, timeout=5)]
    return [r async for r in call(iter([request] * count), metadata=metadata, timeout=5)]


SHAPES = ["Unary", "ServerStream", "ClientStream", "Bidi"]


@pytest.mark.parametrize("shape", SHAPES)
async def test_every_shape_passes_through_the_chain(
    channel: grpc.aio.Channel, keys: TestKeys, shape: str
) -> None:
    replies = await _invoke(channel, shape, "fine", bearer(keys.token()), count=3)
    assert replies and all(r.status == SERVING for r in replies)


@pytest.mark.parametrize("shape", SHAPES)
async def test_every_shape_needs_a_token(channel: grpc.aio.Channel, shape: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await _invoke(channel, shape, "fine", ())
    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("shape", SHAPES)
async def test_a_domain_error_keeps_its_status_and_reason(
    channel: grpc.aio.Channel, keys: TestKeys, shape: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await _invoke(channel, shape, "not-found", bearer(keys.token()))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert error.value.details() == "no such thing"
    assert (REASON_KEY, "NOT_FOUND") in tuple(error.value.trailing_metadata() or ())


@pytest.mark.parametrize("shape", SHAPES)
async def test_a_bug_is_internal_with_an_error_id_that_the_log_carries(
    channel: grpc.aio.Channel, keys: TestKeys, shape: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="shared.rpc.interceptors.error_mapping")
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await _invoke(channel, shape, "bug", bearer(keys.token()))
    assert error.value.code() == grpc.StatusCode.INTERNAL
    details = error.value.details() or ""
    assert "KeyError" not in details and "secret_column" not in details
    assert "Traceback" not in details
    trailers: dict[str, Any] = dict(error.value.trailing_metadata() or ())  # type: ignore[arg-type]
    error_id = str(trailers[ERROR_ID_KEY])
    assert error_id in details
    [record] = [r for r in caplog.records if error_id in r.getMessage()]
    assert "trace " in record.getMessage()
    assert record.exc_info is not None and record.exc_info[0] is KeyError


@pytest.mark.parametrize("shape", SHAPES)
async def test_a_database_outage_is_unavailable(
    channel: grpc.aio.Channel, keys: TestKeys, shape: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await _invoke(channel, shape, "db-down", bearer(keys.token()))
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "CannotConnectNow" not in (error.value.details() or "")


@pytest.mark.parametrize("shape", SHAPES)
async def test_a_control_character_in_any_string_is_invalid_argument_naming_the_field(
    channel: grpc.aio.Channel, keys: TestKeys, shape: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await _invoke(channel, shape, "nul\x00here", bearer(keys.token()))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (error.value.details() or "").startswith("service: must not contain control")
    assert (FIELD_KEY, "service") in tuple(error.value.trailing_metadata() or ())


async def test_bytes_that_are_not_utf8_are_invalid_argument(
    channel: grpc.aio.Channel, keys: TestKeys
) -> None:
    # No serializers: these bytes go on the wire as they are.
    raw = channel.unary_unary(f"/{SERVICE}/Unary")  # type: ignore[call-arg]
    not_utf8 = b"\x0a\x02\xff\xfe"  # field 1 (service), length 2, invalid UTF-8
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await raw(not_utf8, metadata=bearer(keys.token()), timeout=5)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "HealthCheckRequest" in (error.value.details() or "")


async def test_public_methods_need_no_token_and_the_identity_does_not_leak(
    channel: grpc.aio.Channel, keys: TestKeys
) -> None:
    public = channel.unary_unary(
        f"/{SERVICE}/Public",
        request_serializer=Request.SerializeToString,
        response_deserializer=Reply.FromString,
    )
    # Calls interleave on one loop; each sees only its own caller.
    results = await asyncio.gather(
        public(Request(), timeout=5),
        _invoke(channel, "Unary", "fine", bearer(keys.token(Role.ADMIN, uuid.uuid4()))),
    )
    assert results[0].status == SERVING


async def test_a_method_for_some_parties_refuses_a_caller_without_a_certificate(
    channel: grpc.aio.Channel, keys: TestKeys
) -> None:
    operator_only = channel.unary_unary(
        f"/{SERVICE}/OperatorOnly",
        request_serializer=Request.SerializeToString,
        response_deserializer=Reply.FromString,
    )
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await operator_only(Request(), metadata=bearer(keys.token(Role.ADMIN)), timeout=5)
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "without a certificate" in (error.value.details() or "")
