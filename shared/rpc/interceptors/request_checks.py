"""Requests checked before a servicer sees them: parseable, and every string sound."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

from google.protobuf.message import DecodeError, Message

from shared.errors import InvalidArgument
from shared.rpc.interceptors.base import (
    Context,
    Handler,
    StreamBehavior,
    UnaryBehavior,
    WrappingInterceptor,
)
from shared.validation import check_strings


class _Undecodable:
    """Stands in for a request protobuf could not parse (e.g. invalid UTF-8 in a string)."""

    def __init__(self, message_type: str, problem: str) -> None:
        self.message_type = message_type
        self.problem = problem


class RequestCheckInterceptor(WrappingInterceptor):
    """Every request passes the shared rules before a servicer sees it.

    Requests that do not parse become INVALID_ARGUMENT (grpc would answer
    INTERNAL); every string field, however deep, gets ``check_strings``.
    """

    def wrap(self, handler: Handler, method: str) -> Handler:
        raw: Any = super().wrap(handler, method)
        parse = raw.request_deserializer
        if parse is None:
            return cast(Handler, raw)
        message_type = getattr(getattr(parse, "__self__", None), "__name__", "request")

        def tolerant_parse(data: bytes) -> Any:
            try:
                return parse(data)
            except (DecodeError, UnicodeDecodeError, ValueError) as error:
                return _Undecodable(message_type, str(error) or type(error).__name__)

        return cast(Handler, raw._replace(request_deserializer=tolerant_parse))

    @staticmethod
    def _check(request: Any) -> Any:
        if isinstance(request, _Undecodable):
            raise InvalidArgument(
                "request", f"is not a valid {request.message_type} (for example invalid UTF-8)"
            )
        if isinstance(request, Message):
            check_strings(request)
        return request

    async def _checked(self, requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async for request in requests:
            yield self._check(request)

    def _prepare(self, request: Any, context: Context) -> Any:
        if hasattr(request, "__aiter__"):  # a client stream: check each message as it comes
            return self._checked(request)
        return self._check(request)

    async def unary(
        self, method: str, behavior: UnaryBehavior, request: Any, context: Context
    ) -> Any:
        return await behavior(self._prepare(request, context), context)

    async def stream(
        self, method: str, behavior: StreamBehavior, request: Any, context: Context
    ) -> AsyncIterator[Any]:
        async for response in behavior(self._prepare(request, context), context):
            yield response
