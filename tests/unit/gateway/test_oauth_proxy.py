"""/oauth2/ and /.well-known/ passed through to a user instance's HTTPS server as they
are, with the X-Forwarded-* headers; readiness; the gateway's own client token."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any, cast

import httpx

from gateway.oauth_proxy import ClientCredentials, OAuthProxy, upstream_context
from pki import authority
from shared.registry.discovery import Instance, ServiceDirectory
from shared.tls import ca_file, cert_file, key_file
from tests.unit.gateway.fakes import FakeGateway


class Directory:
    def __init__(self, *instances: Instance) -> None:
        self.listed = list(instances)

    def instances(self, service: str) -> list[Instance]:
        return [i for i in self.listed if i.service == service]


def user_instance(http: str = "127.0.0.1:9443") -> Instance:
    return Instance("user", "user-1", "127.0.0.1:50051", "1", 1, http=http)


class Upstream:
    """A fake authorization server: records what reached it, answers as told."""

    def __init__(self, answer: httpx.Response | None = None) -> None:
        self.seen: list[httpx.Request] = []
        self.answer = answer or httpx.Response(200, json={"ok": True})

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def proxied(gw: FakeGateway, upstream: Upstream, *instances: Instance) -> OAuthProxy:
    client = httpx.AsyncClient(transport=httpx.MockTransport(upstream))
    directory = cast(ServiceDirectory, Directory(*instances))
    gw.gateway.oauth = OAuthProxy(directory, client)
    return gw.gateway.oauth


async def test_a_request_goes_through_as_it_is(gw: FakeGateway) -> None:
    answer = httpx.Response(
        302,
        headers=[
            ("Location", "http://localhost:8080/callback?code=abc&state=xyz"),
            ("Set-Cookie", "a=1; HttpOnly; Secure"),
            ("Set-Cookie", "b=2; Path=/oauth2"),
            ("Cache-Control", "no-store"),
        ],
    )
    upstream = Upstream(answer)
    proxied(gw, upstream, user_instance())
    reply = await gw.client.post(
        "/oauth2/authorize?client_id=storefront&state=xyz",
        content=b"username=demo&password=secret",
        headers={
            "content-type": "application/x-www-form-urlencoded",
            "cookie": "login=42",
            "x-forwarded-for": "198.51.100.1",
        },
    )
    assert reply.status_code == 302  # not followed
    assert reply.headers["location"] == "http://localhost:8080/callback?code=abc&state=xyz"
    assert reply.headers.get_list("set-cookie") == ["a=1; HttpOnly; Secure", "b=2; Path=/oauth2"]
    assert reply.headers["cache-control"] == "no-store"
    assert reply.headers["x-frame-options"] == "DENY"  # the edge's headers on top
    [sent] = upstream.seen
    assert str(sent.url) == "https://127.0.0.1:9443/oauth2/authorize?client_id=storefront&state=xyz"
    assert sent.method == "POST" and sent.content == b"username=demo&password=secret"
    assert sent.headers["cookie"] == "login=42"
    # The client's own X-Forwarded-For is dropped: it could choose the IP the sign-in
    # limit counts. The address the gateway saw is the only one passed on.
    assert sent.headers["x-forwarded-for"] == "203.0.113.7"
    assert sent.headers["x-forwarded-host"] == "gateway.test"
    assert sent.headers["x-forwarded-proto"] == "http"
    assert sent.extensions["sni_hostname"] == "user"  # the certificate must name the user service


async def test_the_target_and_the_headers_go_on_byte_for_byte(gw: FakeGateway) -> None:
    """Found by the edge fuzzer: a header value that is not ASCII (``Basic \xe9``) and a path
    whose escape decodes to a control character (``%1F``) were 500s, since the proxy sent
    on the decoded path and header text; an escaped ``?`` in the path became a query."""
    upstream = Upstream()
    proxied(gw, upstream, user_instance())
    reply = await gw.client.post(
        "/oauth2/token", content=b"grant_type=x", headers={b"authorization": b"Basic \xe9"}
    )
    assert reply.status_code == 200, reply.text
    sent = [(name.lower(), value) for name, value in upstream.seen[-1].headers.raw]
    assert (b"authorization", b"Basic \xe9") in sent
    for path in ("/.well-known/%1F", "/.well-known/%C3%A9%00", "/oauth2/token%3Fgrant_type=x"):
        reply = await gw.client.get(path + "?a=%FF&b=%20")
        assert reply.status_code == 200, (path, reply.text)
        assert upstream.seen[-1].url.raw_path == (path + "?a=%FF&b=%20").encode(), path


async def test_the_discovery_document_is_served_from_the_storefronts_origin(
    gw: FakeGateway,
) -> None:
    upstream = Upstream(httpx.Response(200, json={"issuer": "http://localhost:8080"}))
    proxied(gw, upstream, user_instance(""), user_instance("10.0.0.9:9443"))
    reply = await gw.client.get("/.well-known/openid-configuration")
    assert reply.json() == {"issuer": "http://localhost:8080"}
    assert upstream.seen[0].url.host == "10.0.0.9"  # the instance that serves HTTPS


async def test_no_authorization_server_is_a_503(gw: FakeGateway) -> None:
    proxied(gw, Upstream(), Instance("user", "u", "127.0.0.1:1", "1", 1))
    reply = await gw.client.get("/oauth2/authorize")
    assert reply.status_code == 503
    assert reply.json()["reason"] == "NO_INSTANCE"


async def test_an_authorization_server_that_fails_is_a_502(gw: FakeGateway) -> None:
    upstream = Upstream()
    upstream.answer = cast(Any, httpx.ConnectError("refused"))
    proxied(gw, upstream, user_instance())
    reply = await gw.client.get("/oauth2/authorize")
    assert reply.status_code == 502
    assert reply.json()["type"] == "https://shop.local/problems/bad-gateway"


async def test_the_body_limit_holds_for_the_proxy_too(gw: FakeGateway) -> None:
    upstream = Upstream()
    proxied(gw, upstream, user_instance())
    reply = await gw.client.post("/oauth2/token", content=b"x" * (64 * 1024 + 1))
    assert reply.status_code == 413
    assert upstream.seen == []


async def test_the_gateways_own_token_is_fetched_once(gw: FakeGateway, tmp_path: Path) -> None:
    upstream = Upstream(
        httpx.Response(200, json={"access_token": "t-1", "token_type": "Bearer", "expires_in": 300})
    )
    proxy = proxied(gw, upstream, user_instance())
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    token = ClientCredentials(proxy, "storefront", secret)
    assert [await token(), await token()] == ["t-1", "t-1"]
    [sent] = upstream.seen
    assert sent.url.path == "/oauth2/token"
    assert sent.content == b"grant_type=client_credentials&scope=catalog%3Aread"
    assert sent.headers["authorization"] == "Basic c3RvcmVmcm9udDpzM2NyZXQ="


async def test_readiness_needs_the_signing_keys_and_the_database(gw: FakeGateway) -> None:
    assert (await gw.client.get("/healthz/ready")).status_code == 200
    gw.gateway.database_ok = lambda: False
    down = await gw.client.get("/healthz/ready")
    assert down.status_code == 503 and down.json()["detail"] == "the database does not answer"
    gw.gateway.database_ok = lambda: True
    gw.gateway.auth.verifier.replace_keys({})
    keyless = await gw.client.get("/healthz/ready")
    assert keyless.status_code == 503 and "signing key" in keyless.json()["detail"]
    assert (await gw.client.get("/healthz/live")).status_code == 200


# --- over real TLS: the project's CA, the gateway's certificate, the server name `user` ----


async def https_server(tls_dir: Path, identity: str, seen: list[str]) -> asyncio.Server:
    """A one-answer HTTPS server as ``identity``, requiring a client certificate of the CA;
    records the client certificate's common name."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca_file(tls_dir)))
    context.load_cert_chain(cert_file(tls_dir, identity), key_file(tls_dir, identity))
    context.verify_mode = ssl.CERT_REQUIRED

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        subject = dict(pair[0] for pair in writer.get_extra_info("peercert")["subject"])
        seen.append(subject["commonName"])
        body = b'{"issuer":"http://localhost:8080"}'
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(body), body)
        )
        await writer.drain()
        writer.close()

    return await asyncio.start_server(answer, "127.0.0.1", 0, ssl=context)


async def test_the_proxy_speaks_mutual_tls_to_the_user_service(
    gw: FakeGateway, tmp_path: Path
) -> None:
    authority.ensure_authority(tmp_path, ["user", "product", "gateway"])
    client = httpx.AsyncClient(verify=upstream_context(tmp_path))
    for identity, expected in (("user", 200), ("product", 502)):
        seen: list[str] = []
        server = await https_server(tmp_path, identity, seen)
        port = server.sockets[0].getsockname()[1]
        gw.gateway.oauth = OAuthProxy(
            cast(ServiceDirectory, Directory(user_instance(f"127.0.0.1:{port}"))), client
        )
        async with server:
            reply = await gw.client.get("/.well-known/openid-configuration")
        # A server whose certificate names another service is refused in the handshake.
        assert reply.status_code == expected, (identity, reply.text)
        assert seen == (["gateway"] if expected == 200 else [])
    await client.aclose()
