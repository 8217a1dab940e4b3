"""Requests to the authorization server, through the gateway, as strategies.

The endpoints of services/user/adapters/oauth/app.py: ``/oauth2/authorize`` (its query),
``/oauth2/login`` and ``/oauth2/consent`` (forms whose CSRF token the fuzzer computes,
so a hostile form gets past it), ``/oauth2/token`` (every grant type, and ones that do
not exist), ``/oauth2/revoke``, ``/oauth2/userinfo``, ``/oauth2/logout`` and
``/.well-known/*``. Each parameter is mostly a value that works (a registered client,
its redirect URI, a real code or refresh token, a valid PKCE pair) and otherwise
hostile: unregistered or bent redirect URIs, unknown clients and grants, huge and
non-UTF-8 values, parameters repeated, client authentication that is wrong, malformed
or given twice. Real codes, tokens and sessions are placeholders (``<<code>>`` ...)
that oauth_flows.py fills in just before the request is sent.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from hypothesis import strategies as st

from tests.fuzz.http_call import HttpCall
from tests.fuzz.oauth_flows import CHALLENGE, SESSION_COOKIE, VERIFIER
from tests.fuzz.strategies import long_text, nasty_text, weighted

Strategy = st.SearchStrategy
Draw = Callable[[Strategy[Any]], Any]
FORM = b"application/x-www-form-urlencoded"
SCOPES = ("openid", "email", "profile", "orders:read", "orders:write", "wallet:read")
GRANTS = ("authorization_code", "refresh_token", "client_credentials")
ODD_BEARERS = (b"Bearer", b"Basic x", b"bearer a.b.c", b"Bearer a b", b"Bearer " + b"x" * 8000)
ODD_GRANTS = ("password", "implicit", "", "urn:ietf:params:oauth:grant-type:jwt-bearer", "CODE")


@dataclass(frozen=True)
class OAuthAim:
    issuer: str
    redirect_uris: Mapping[str, Sequence[str]]
    secrets: Mapping[str, str]


def hostile() -> Strategy[str]:
    return st.one_of(
        nasty_text,
        long_text,
        st.text(max_size=40),
        st.sampled_from(["%FF", "\udcff", "' OR 1=1 --", "${jndi:x}", "a" * 70_000]),
    )


def _pick(realistic: Strategy[str]) -> Strategy[str | None]:
    """A good value mostly; sometimes hostile, empty or absent."""
    return weighted((12, realistic), (1, hostile()), (1, st.just("")), (1, st.none()))


def _redirects(aim: OAuthAim) -> Strategy[str]:
    registered = sorted({u for uris in aim.redirect_uris.values() for u in uris})
    bent = [
        "https://evil.example/callback",
        "http://127.0.0.1:8976/callback/../evil",
        "http://127.0.0.1:8976/callback?x=1",
        "http://127.0.0.1:8976/callback#frag",
        "http://127.0.0.1:8976.evil.example/callback",
        "HTTP://127.0.0.1:8976/callback",
        "http://127.0.0.1:8976/Callback",
        "javascript:alert(1)",
        "//evil.example/callback",
        aim.issuer + "/auth/callback@evil.example",
    ]
    return weighted((5, st.sampled_from(registered)), (2, st.sampled_from(bent)))


def _authorize_params(aim: OAuthAim) -> Strategy[list[tuple[str, str]]]:
    clients = [*aim.redirect_uris, "loadgen", "nobody"]

    @st.composite
    def build(draw: Draw) -> list[tuple[str, str]]:
        client = draw(_pick(st.sampled_from(clients)))
        own = list(aim.redirect_uris.get(client or "", ()))
        redirect = draw(
            _pick(
                weighted((4, st.sampled_from(own)), (1, _redirects(aim)))
                if own
                else _redirects(aim)
            )
        )
        scope = draw(_pick(st.lists(st.sampled_from(SCOPES), min_size=1, max_size=4).map(" ".join)))
        values = {
            "response_type": draw(_pick(st.sampled_from(["code", "code", "token", "id_token"]))),
            "client_id": client,
            "redirect_uri": redirect,
            "scope": scope,
            "state": draw(_pick(st.sampled_from(["s1", "xyz" * 20]))),
            "code_challenge": draw(_pick(st.sampled_from([CHALLENGE, CHALLENGE[:-1], "x" * 43]))),
            "code_challenge_method": draw(
                _pick(st.sampled_from(["S256", "S256", "plain", "s256"]))
            ),
            "nonce": draw(st.none() | st.sampled_from(["n-1", "n" * 300])),
            "response_mode": draw(st.none() | st.sampled_from(["query", "fragment", "form_post"])),
        }
        pairs = [(k, v) for k, v in values.items() if v is not None]
        return _bend(draw, pairs)

    return build()


def _bend(draw: Draw, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Now and then: a parameter repeated, or an unknown one added."""
    if pairs and draw(st.integers(0, 6)) == 0:
        name, value = draw(st.sampled_from(pairs))
        pairs = [*pairs, (name, draw(st.sampled_from([value, value + "2", ""])))]
    if draw(st.integers(0, 9)) == 0:
        pairs = [*pairs, (draw(hostile()), draw(hostile()))]
    return pairs


def _encode(pairs: Sequence[tuple[str, str]]) -> str:
    return "&".join(f"{_q(k)}={_q(v)}" for k, v in pairs)


def _q(text: str) -> str:
    return quote(text, safe="", errors="surrogatepass")


def _cookies(draw: Draw, session: bool) -> list[tuple[str, bytes]]:
    jar = []
    if session and draw(st.integers(0, 2)):
        jar.append(f"{SESSION_COOKIE}=<<session>>")
    elif draw(st.integers(0, 5)) == 0:
        jar.append(f"{SESSION_COOKIE}={draw(st.sampled_from(['x', 'y' * 5000, '%00']))}")
    jar.append("shop_oauth_csrf=<<csrf-cookie>>")
    return [("Cookie", "; ".join(jar).encode())]


def authorize(aim: OAuthAim) -> Strategy[HttpCall]:
    @st.composite
    def build(draw: Draw) -> HttpCall:
        pairs = draw(_authorize_params(aim))
        headers = _cookies(draw, session=True)
        return HttpCall(
            "GET /oauth2/authorize", "GET", "/oauth2/authorize", tuple(pairs), tuple(headers)
        )

    return build()


def form_page(page: str, aim: OAuthAim) -> Strategy[HttpCall]:
    """``/oauth2/login`` or ``/oauth2/consent``: the form the page would post back."""

    @st.composite
    def build(draw: Draw) -> HttpCall:
        authorize_query = _encode(draw(_authorize_params(aim)))
        if draw(st.integers(0, 9)) == 0:
            authorize_query = draw(hostile())
        fields: list[tuple[str, str]] = [("authorize", authorize_query)]
        csrf = draw(weighted((6, st.just(f"<<csrf:{page}>>")), (1, hostile()), (1, st.just(""))))
        fields.append(("csrf_token", csrf))
        if page == "login":
            email = draw(_pick(st.sampled_from(["<<email>>", "demo@shop.local", "no@example.com"])))
            password = draw(_pick(st.sampled_from(["<<password>>", "wrong-password-1"])))
            fields += [
                (k, v) for k, v in (("email", email), ("password", password)) if v is not None
            ]
        else:
            decision = draw(_pick(st.sampled_from(["allow", "allow", "deny"])))
            fields += [("decision", decision)] if decision is not None else []
        fields = _bend(draw, fields)
        body = _encode(fields).encode()
        if draw(st.integers(0, 11)) == 0:
            body += b"&email=%FF%FE&password=\xff"  # not UTF-8, escaped and raw
        headers = [("Content-Type", FORM), *_cookies(draw, session=page == "consent")]
        if draw(st.integers(0, 3)) == 0:
            headers.append(
                ("X-Forwarded-For", draw(st.sampled_from([b"203.0.113.9", b"x" * 300, b"::1, ,"])))
            )
        path = f"/oauth2/{page}"
        return HttpCall(f"POST {path}", "POST", path, (), tuple(headers), body)

    return build()


def _client_auth(
    draw: Draw, aim: OAuthAim
) -> tuple[list[tuple[str, bytes]], list[tuple[str, str]]]:
    """(headers, form fields) that authenticate a client, or try to."""
    client = draw(st.sampled_from(["storefront", "loadgen", "shop-cli", "nobody"]))
    secret = aim.secrets.get(client, "no-secret")
    basic = base64.b64encode(f"{client}:{secret}".encode()).decode()
    choice = draw(st.integers(0, 9))
    if choice <= 3:
        return [("Authorization", f"Basic {basic}".encode())], []
    if choice == 4:
        return [], [("client_id", client), ("client_secret", secret)]
    if choice == 5:
        return [], [("client_id", client)]
    odd = draw(
        st.sampled_from(
            [
                b"Basic !!!not-base64",
                b"Basic " + base64.b64encode(b"no-colon"),
                b"Basic " + base64.b64encode(f"{client}:wrong".encode()),
                b"Basic " + base64.b64encode(b"\xff\xfe:\xff"),
                b"Basic " + base64.b64encode(b"a" * 60_000 + b":b"),
                b"Basic",
                b"Bearer x",
                "Basic \u00e9".encode(),
            ]
        )
    )
    both = [("client_id", client), ("client_secret", secret)] if choice == 9 else []
    return [("Authorization", odd)], both


def token(aim: OAuthAim) -> Strategy[HttpCall]:
    @st.composite
    def build(draw: Draw) -> HttpCall:
        grant = draw(
            weighted((6, st.sampled_from(GRANTS)), (1, st.sampled_from(ODD_GRANTS)), (1, hostile()))
        )
        headers, fields = _client_auth(draw, aim)
        fields = [("grant_type", grant), *fields]
        uris = [u for us in aim.redirect_uris.values() for u in us]
        optional = {
            "code": _pick(st.sampled_from(["<<code>>", "<<code>>", "used-or-made-up"])),
            "redirect_uri": _pick(st.sampled_from(uris)),
            "code_verifier": _pick(st.sampled_from([VERIFIER, VERIFIER[:42], "v" * 129])),
            "refresh_token": _pick(st.sampled_from(["<<refresh>>", "<<refresh>>", "rt-made-up"])),
            "scope": _pick(
                st.lists(st.sampled_from([*SCOPES, "catalog:admin", "nope"]), max_size=3).map(
                    " ".join
                )
            ),
        }
        for name, strategy in optional.items():
            if draw(st.integers(0, 2)):
                value = draw(strategy)
                if value is not None:
                    fields.append((name, value))
        body = _encode(_bend(draw, fields)).encode()
        content = draw(
            weighted(
                (8, st.just(FORM)), (1, st.sampled_from([b"application/json", b"text/plain", b""]))
            )
        )
        return _post("/oauth2/token", [*headers, ("Content-Type", content)], body)

    return build()


def _post(path: str, headers: list[tuple[str, bytes]], body: bytes) -> HttpCall:
    return HttpCall(f"POST {path}", "POST", path, (), tuple(headers), body)


def revoke(aim: OAuthAim) -> Strategy[HttpCall]:
    @st.composite
    def build(draw: Draw) -> HttpCall:
        headers, fields = _client_auth(draw, aim)
        value = draw(_pick(st.sampled_from(["<<refresh>>", "<<access>>", "made-up"])))
        fields += [("token", value)] if value is not None else []
        hint = draw(st.none() | st.sampled_from(["refresh_token", "access_token", "id_token", "x"]))
        fields += [("token_type_hint", hint)] if hint is not None else []
        body = _encode(_bend(draw, fields)).encode()
        return _post("/oauth2/revoke", [*headers, ("Content-Type", FORM)], body)

    return build()


def userinfo() -> Strategy[HttpCall]:
    @st.composite
    def build(draw: Draw) -> HttpCall:
        method = draw(st.sampled_from(["GET", "POST"]))
        auth = draw(
            weighted(
                (3, st.just(b"Bearer <<access>>")),
                (1, st.just(b"Bearer <<test-token>>")),
                (1, st.sampled_from(ODD_BEARERS)),
                (1, st.none()),
            )
        )
        headers = (("Authorization", auth),) if auth is not None else ()
        return HttpCall(f"{method} /oauth2/userinfo", method, "/oauth2/userinfo", (), headers)

    return build()


def logout(aim: OAuthAim) -> Strategy[HttpCall]:
    @st.composite
    def build(draw: Draw) -> HttpCall:
        client = draw(_pick(st.sampled_from([*aim.redirect_uris, "nobody"])))
        places = [aim.issuer + "/", "http://127.0.0.1:8976/", "https://evil.example/", aim.issuer]
        target = draw(_pick(st.sampled_from(places)))
        named = (("client_id", client), ("post_logout_redirect_uri", target))
        pairs = [(k, v) for k, v in named if v is not None]
        pairs = _bend(draw, pairs)
        cookies = tuple(_cookies(draw, session=True))
        return HttpCall("GET /oauth2/logout", "GET", "/oauth2/logout", tuple(pairs), cookies)

    return build()


def well_known() -> Strategy[HttpCall]:
    @st.composite
    def build(draw: Draw) -> HttpCall:
        name = draw(
            weighted(
                (3, st.sampled_from(["openid-configuration", "jwks.json"])),
                (1, hostile().map(_q)),
            )
        )
        query = tuple(_bend(draw, []))
        return HttpCall("GET /.well-known/*", "GET", f"/.well-known/{name}", query)

    return build()


def targets(aim: OAuthAim) -> list[tuple[str, Strategy[HttpCall]]]:
    return [
        ("GET /oauth2/authorize", authorize(aim)),
        ("POST /oauth2/login", form_page("login", aim)),
        ("POST /oauth2/consent", form_page("consent", aim)),
        ("POST /oauth2/token", token(aim)),
        ("POST /oauth2/revoke", revoke(aim)),
        ("GET|POST /oauth2/userinfo", userinfo()),
        ("GET /oauth2/logout", logout(aim)),
        ("GET /.well-known/*", well_known()),
    ]
