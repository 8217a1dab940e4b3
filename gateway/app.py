"""The ASGI application: routes, problem handlers, middlewares in their order.

``create_app(settings, gateway)`` takes the parts a running instance is made of
(``gateway/server.py`` opens them on the real services; the tests give fakes), so the
same application serves in production and in the unit tests.

The middlewares, outermost first: ``Observe`` (the request's span and metrics, so
every answer is counted, refusals included), ``SecurityHeaders`` (on every answer,
problems included), ``ErrorGuard`` (a bug becomes a 500 problem, never a stack),
``RateLimit`` (refused before anything is read), ``BodyLimit`` (refused before a
handler reads too much). Inside them, FastAPI's handlers turn a ``Problem``, a gRPC
error or a kit error into ``application/problem+json`` through the one table of
gateway/problems.py.
"""

from __future__ import annotations

from typing import Any

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from gateway import storefront
from gateway.api import api_router, health
from gateway.idempotency import HEADER
from gateway.limits import (
    BodyLimit,
    RateLimit,
    Scope,
    SecurityHeaders,
    client_address,
    too_large,
)
from gateway.oauth_proxy import proxy_router
from gateway.observability import ErrorGuard, Observe
from gateway.problems import (
    BAD_REQUEST,
    MEDIA_TYPE,
    METHOD_NOT_ALLOWED,
    NOT_ROUTED,
    VALIDATION,
    Problem,
    Rule,
    as_problem,
    internal_error,
)
from gateway.settings import GatewaySettings
from gateway.state import Gateway
from shared.config.models import RateLimit as Limit
from shared.errors import DomainError

DESCRIPTION = (
    "REST/JSON over the shop's gRPC services. Errors are RFC 9457 problem documents"
    " (`application/problem+json`); every POST needs an `Idempotency-Key` header."
    " See docs/gateway.md."
)


def problem_response(problem: Problem, request: Request) -> JSONResponse:
    return JSONResponse(
        problem.body(request.url.path),
        problem.status,
        headers=problem.headers,
        media_type=MEDIA_TYPE,
    )


async def on_known_error(request: Request, error: Exception) -> JSONResponse:
    problem = as_problem(error)
    if problem is None:  # not one of ours: the ErrorGuard's
        raise error
    return problem_response(problem, request)


async def on_validation_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    found = []
    for entry in error.errors():
        if entry.get("type") == "json_invalid":
            return problem_response(Problem(BAD_REQUEST, "the body is not valid JSON"), request)
        where = [str(part) for part in entry.get("loc", ())]
        # Never the input itself: only where, and what is wrong with it.
        found.append(
            {"field": ".".join(where[1:]) or where[0], "in": where[0], "detail": entry["msg"]}
        )
    detail = "; ".join(f"{e['field']}: {e['detail']}" for e in found)
    return problem_response(Problem(VALIDATION, detail, errors=found), request)


async def on_http_exception(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, HTTPException)
    if error.status_code == 413:
        problem = too_large(request.app.state.gateway_settings.max_body_bytes)
    elif error.status_code == 404:
        problem = Problem(NOT_ROUTED, f"no resource at {request.url.path}")
    elif error.status_code == 405:
        problem = Problem(METHOD_NOT_ALLOWED, f"{request.method} is not allowed here")
    elif error.status_code >= 500:
        problem = internal_error("http")
    else:
        problem = Problem(Rule(error.status_code, "bad-request", "Bad request"), str(error.detail))
    problem.headers.update(error.headers or {})
    return problem_response(problem, request)


def _rate_key(scope: Scope) -> str | None:
    gateway: Gateway | None = scope["app"].state.gateway
    if gateway is None:
        return None
    authorization = dict(scope.get("headers", ())).get(b"authorization")
    caller = gateway.auth.quietly(authorization.decode("latin-1") if authorization else None)
    return caller.rate_key if caller is not None else client_address(scope)


def openapi_document(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, with the Idempotency-Key of every POST marked required (the
    route checks it itself, to answer a 400 problem rather than a 422)."""
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        document = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        for operations in document.get("paths", {}).values():
            for parameter in operations.get("post", {}).get("parameters", []):
                if parameter.get("in") == "header" and parameter.get("name") == HEADER:
                    parameter["required"] = True
                    parameter["schema"] = {"type": "string", "minLength": 1, "maxLength": 64}
        app.openapi_schema = document
    return app.openapi_schema


def create_app(settings: GatewaySettings, gateway: Gateway | None = None) -> FastAPI:
    app = FastAPI(
        title="shop gateway",
        version="1",
        description=DESCRIPTION,
        docs_url=None,  # no pages loading scripts from elsewhere (the CSP forbids it)
        redoc_url=None,
        openapi_url="/api/v1/openapi.json",
    )
    app.state.gateway = gateway
    app.state.gateway_settings = settings
    app.include_router(api_router())
    app.include_router(health.router)
    app.include_router(proxy_router())
    storefront.install(app)
    for error_type in (Problem, grpc.aio.AioRpcError, DomainError):
        app.add_exception_handler(error_type, on_known_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(HTTPException, on_http_exception)
    limit = Limit(rate_per_second=settings.rate_limit_per_second, burst=settings.rate_limit_burst)
    # Added innermost first: each add_middleware wraps what is there.
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(
        RateLimit,
        key_of=_rate_key,
        limit_of=lambda _scope: limit if settings.rate_limit_enabled else None,
        table=gateway.limiter if gateway is not None else None,
    )
    app.add_middleware(ErrorGuard)
    app.add_middleware(SecurityHeaders, hsts=settings.tls_enabled)
    app.add_middleware(Observe)
    app.openapi = lambda: openapi_document(app)  # type: ignore[method-assign]
    return app
