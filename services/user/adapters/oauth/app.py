"""The authorization server's HTTP API (FastAPI): discovery, JWKS, authorize with its sign-in
and consent pages, token, revoke, userinfo, health.

Only the gateway (and operators) reach it (server.py requires their certificates); the
browser's origin is the issuer, so every absolute URL is built from ``issuer``, and the
gateway's X-Forwarded-For names the client IP that the sign-in rate limit counts.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from aioauth.errors import OAuth2Error
from aioauth.server import AuthorizationServer, AuthorizationState
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response

from services.user import use_cases
from services.user.adapters.oauth import discovery, issuing
from services.user.adapters.oauth.grants import authorization_server
from services.user.adapters.oauth.pages import (
    COOKIE_PATH,
    SCOPE_TEXT,
    SECURITY_HEADERS,
    SESSION_COOKIE,
    STYLESHEET,
    csrf_ok,
    error_page,
    form_page,
    set_cookie,
)
from services.user.adapters.oauth.protocol import (
    POST,
    QUERY,
    bearer_error,
    client_ip,
    json_response,
    oauth_request,
    redirect_error,
    returns_after_logout,
    single,
)
from services.user.adapters.oauth.storage import CLIENT, SIGNED_IN, OAuthStorage
from services.user.domain import OAuthClient, Passwords
from shared.auth.scopes import OPENID, parse_scope
from shared.errors import InvalidArgument, RateLimited, Unauthenticated

log = logging.getLogger(__name__)

SIGN_IN_FAILED = use_cases.BAD_CREDENTIALS[0].upper() + use_cases.BAD_CREDENTIALS[1:] + "."
TOO_MANY = "Too many failed sign-ins. Please wait a few minutes, then try again."


def create_app(storage: OAuthStorage, passwords: Passwords, jwks: Callable[[], bytes]) -> FastAPI:
    """``jwks``: the current JWK Set document, the one etcd holds."""
    server: AuthorizationServer = authorization_server(storage)
    uow, issuer = storage.unit_of_work, storage.issuer
    secure_cookies = issuer.startswith("https://")
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        try:
            response = await call_next(request)
        except Exception:  # never a stack or a class name to the caller
            log.exception("%s %s failed", request.method, request.url.path)
            if request.url.path in ("/oauth2/token", "/oauth2/revoke", "/oauth2/userinfo"):
                response = JSONResponse({"error": "server_error"}, 500)
            else:
                response = error_page("Something went wrong", "Please try again later.", 500)
        response.headers.update(SECURITY_HEADERS)
        return response

    @app.get("/healthz")
    async def healthz() -> Response:
        return PlainTextResponse("ok")

    @app.get("/.well-known/openid-configuration")
    async def openid_configuration() -> Response:
        return JSONResponse(discovery.document(issuer), headers={"Cache-Control": "max-age=300"})

    @app.get("/.well-known/jwks.json")
    async def jwksjson_response() -> Response:
        return Response(
            jwks(), media_type="application/json", headers={"Cache-Control": "max-age=60"}
        )

    @app.get("/oauth2/static/oauth.css")
    async def stylesheet() -> Response:
        return Response(
            STYLESHEET, media_type="text/css", headers={"Cache-Control": "max-age=3600"}
        )

    async def validated(
        request: Request, params: dict[str, str]
    ) -> tuple[OAuthClient, AuthorizationState] | Response:
        """The authorize request checked: an HTML page while the redirect URI is not known
        good (never a redirect to an address the client did not register), then the RFC's
        error redirect."""
        client_id, redirect_uri = params.get("client_id", ""), params.get("redirect_uri", "")
        client = await use_cases.get_client(uow, client_id) if client_id else None
        if client is None:
            return error_page("Unknown application", "This application is not registered here.")
        if not redirect_uri or not client.redirects_to(redirect_uri):
            return error_page(
                "Wrong return address",
                f"{client.name} asked to return to an address it did not register.",
            )
        oauth = oauth_request(request, "GET", params, {})
        oauth.extra[CLIENT] = client
        try:
            return client, await server.validate_authorization_request(oauth)
        except OAuth2Error as error:
            return redirect_error(redirect_uri, error, params.get("state", ""))

    async def finish(client: OAuthClient, state: AuthorizationState, signed: Any) -> Response:
        state.request.extra[CLIENT] = client
        state.request.extra[SIGNED_IN] = signed
        try:
            response = await server.finalize_authorization_response(state)
        except OAuth2Error as error:
            return redirect_error(
                state.request.query.redirect_uri, error, state.request.query.state
            )
        return RedirectResponse(response.headers["location"], 302)

    def login_page(request: Request, client: OAuthClient, authorize: str, **extra: Any) -> Response:
        status, email, message = (
            extra.pop("status", 200),
            extra.pop("email", ""),
            extra.pop("message", ""),
        )
        return form_page(
            request,
            "login.html",
            "login",
            authorize,
            secure=secure_cookies,
            status=status,
            title="Sign in",
            client_name=client.name,
            email=email,
            message=message,
            **extra,
        )

    async def authorize_flow(request: Request, params: dict[str, str], authorize: str) -> Response:
        checked = await validated(request, params)
        if isinstance(checked, Response):
            return checked
        client, state = checked
        session = request.cookies.get(SESSION_COOKIE, "")
        signed = await use_cases.signed_in(uow, session, storage.clock())
        if signed is None:
            return login_page(request, client, authorize)
        if client.first_party:
            return await finish(client, state, signed)
        requested = client.grantable(parse_scope(params.get("scope", "")), signed[0].role)
        scopes = [(s, SCOPE_TEXT.get(s, s)) for s in sorted(requested, key=lambda s: s != OPENID)]
        return form_page(
            request,
            "consent.html",
            "consent",
            authorize,
            secure=secure_cookies,
            title=f"Allow {client.name}?",
            client_name=client.name,
            scopes=scopes,
            email=signed[0].email,
        )

    @app.get("/oauth2/authorize")
    async def authorize(request: Request) -> Response:
        params = single(request.query_params.multi_items(), QUERY)
        if params is None:
            return error_page("Invalid request", "A parameter was given more than once.")
        return await authorize_flow(request, params, request.url.query)

    def _form_authorize(form: dict[str, str]) -> dict[str, str] | None:
        return single(parse_qsl(form.get("authorize", ""), keep_blank_values=True), QUERY)

    @app.post("/oauth2/login")
    async def login(request: Request) -> Response:
        form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
        authorize_query = form.get("authorize", "")
        params = _form_authorize(form)
        if params is None or not csrf_ok(
            request, "login", authorize_query, form.get("csrf_token", "")
        ):
            return error_page(
                "Your sign-in page expired", "Go back to the application and try again."
            )
        checked = await validated(request, params)
        if isinstance(checked, Response):
            return checked
        client, email = checked[0], form.get("email", "")
        try:
            user = await use_cases.sign_in(
                uow,
                passwords,
                email=email,
                password=form.get("password", ""),
                ip=client_ip(request),
                now=storage.clock(),
            )
        except RateLimited as limited:
            retry = {"Retry-After": str(limited.retry_after_ms // 1000)}
            return login_page(
                request,
                client,
                authorize_query,
                status=429,
                email=email,
                message=TOO_MANY,
                headers=retry,
            )
        except (Unauthenticated, InvalidArgument):  # a malformed email is just wrong too
            return login_page(
                request, client, authorize_query, status=401, email=email, message=SIGN_IN_FAILED
            )
        ttl = storage.lifetimes.session
        session = await use_cases.open_session(uow, user, ttl=ttl, now=storage.clock())
        response = RedirectResponse(f"{issuer}/oauth2/authorize?{authorize_query}", 303)
        max_age = int(ttl.total_seconds())
        set_cookie(
            response, SESSION_COOKIE, session, max_age=max_age, strict=False, secure=secure_cookies
        )
        return response

    @app.post("/oauth2/consent")
    async def consent(request: Request) -> Response:
        form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
        authorize_query = form.get("authorize", "")
        params = _form_authorize(form)
        if params is None or not csrf_ok(
            request, "consent", authorize_query, form.get("csrf_token", "")
        ):
            return error_page("Your page expired", "Go back to the application and try again.")
        checked = await validated(request, params)
        if isinstance(checked, Response):
            return checked
        client, state = checked
        signed = await use_cases.signed_in(
            uow, request.cookies.get(SESSION_COOKIE, ""), storage.clock()
        )
        if signed is None:
            return RedirectResponse(f"{issuer}/oauth2/authorize?{authorize_query}", 303)
        if form.get("decision") != "allow":
            return redirect_error(
                params["redirect_uri"],
                "access_denied",
                params.get("state", ""),
                "the person declined",
            )
        return await finish(client, state, signed)

    @app.get("/oauth2/logout")
    async def logout(request: Request) -> Response:
        """RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0): ends this
        server's sign-in session, then back to the client if it names a place of its own."""
        await use_cases.sign_out(uow, request.cookies.get(SESSION_COOKIE, ""))
        params = single(
            request.query_params.multi_items(), ("client_id", "post_logout_redirect_uri", "state")
        )
        target = (params or {}).get("post_logout_redirect_uri", "")
        client = await use_cases.get_client(uow, (params or {}).get("client_id", ""))
        response: Response
        if client is not None and returns_after_logout(client.redirect_uris, target):
            response = RedirectResponse(target, 303)
        else:
            response = error_page("Signed out", "You are signed out.", status=200)
        response.delete_cookie(
            SESSION_COOKIE, path=COOKIE_PATH, secure=secure_cookies, httponly=True
        )
        return response

    @app.post("/oauth2/token")
    async def token(request: Request) -> Response:
        post = single(list((await request.form()).multi_items()), POST)  # type: ignore[arg-type]
        if post is None:
            return JSONResponse(
                {"error": "invalid_request", "error_description": "a parameter was repeated"},
                400,
                headers={"Cache-Control": "no-store"},
            )
        return json_response(
            await server.create_token_response(oauth_request(request, "POST", {}, post))
        )

    @app.post("/oauth2/revoke")
    async def revoke(request: Request) -> Response:
        post = single(list((await request.form()).multi_items()), POST)  # type: ignore[arg-type]
        if post is None:
            return JSONResponse(
                {"error": "invalid_request"}, 400, headers={"Cache-Control": "no-store"}
            )
        oauth = oauth_request(request, "POST", {}, post)
        return json_response(await server.revoke_token(oauth))

    @app.api_route("/oauth2/userinfo", methods=["GET", "POST"])
    async def userinfo(request: Request) -> Response:
        scheme, _, bearer = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not bearer.strip():
            return bearer_error(401, "")
        try:
            identity = storage.verifier.verify(bearer.strip())
        except Unauthenticated:
            return bearer_error(401, "invalid_token")
        if OPENID not in identity.scopes:
            return bearer_error(403, "insufficient_scope")
        user = await issuing.token_holder(uow, identity.user_id, issuing.jti_of(bearer.strip()))
        if user is None:
            return bearer_error(401, "invalid_token")
        claims = {"sub": str(user.user_id), "role": user.role.value}
        if "email" in identity.scopes:
            claims["email"] = user.email
        return JSONResponse(claims, headers={"Cache-Control": "no-store"})

    return app
