"""The edge fuzzer's properties, as pure functions of a request, its answer and the rows.

On every request, REST or OAuth2:

1. *status*: never a 5xx, and an answer within ``HTTP_DEADLINE``;
2. *leak*: no body or header names an exception class, a traceback or SQL (the gRPC
   fuzzer's patterns, ``harness.leaks``; the request's own strings, HTML-escaped too,
   may come back);
3. *rows*: a refused request (4xx) changes no row of any database, but for the answer
   the gateway keeps under its Idempotency-Key (``done``, with that very status); and no
   Idempotency-Key is left ``in_flight`` once a request has its answer.

Under ``/api/``: 4. *problem*: every 4xx is ``application/problem+json`` whose ``status``
is the answer's and whose ``type`` is one of ``https://shop.local/problems/``.

OAuth2: 5. *oauth*: the token and revocation endpoints answer JSON, a refusal with an
RFC 6749/7009 ``error`` code (but for the gateway's own 413 and 429 problem documents,
its limits before any endpoint); userinfo's refusals carry ``WWW-Authenticate: Bearer``;
and no answer of authorize, login, consent or logout redirects anywhere but to the
issuer's own pages or a redirect URI the client named registered (for logout, the root
of one's origin).
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from tests.fuzz.harness import Snapshot, diff, leaks
from tests.fuzz.http_call import HttpCall

HTTP_DEADLINE = 30.0
PROBLEM = "application/problem+json"
PROBLEM_TYPES = "https://shop.local/problems/"
IDEMPOTENCY_TABLE = "gateway:public.idempotency_keys"
TOKEN_ERRORS = frozenset(
    {
        "invalid_request", "invalid_client", "invalid_grant", "unauthorized_client",
        "unsupported_grant_type", "invalid_scope",
    }
)  # fmt: skip
REVOKE_ERRORS = frozenset({"invalid_request", "invalid_client", "unsupported_token_type"})
JSON_ENDPOINTS = {"/oauth2/token": TOKEN_ERRORS, "/oauth2/revoke": REVOKE_ERRORS}
# What the gateway refuses before it passes anything on: a body over its limit, a client
# over its rate, as its own problem documents.
EDGE_REFUSALS = (413, 429)
REDIRECTING = ("/oauth2/authorize", "/oauth2/login", "/oauth2/consent")


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    elapsed: float
    timed_out: bool = False

    def header(self, name: str) -> str | None:
        found = [v for k, v in self.headers if k.lower() == name.lower()]
        return found[0] if found else None

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


@dataclass(frozen=True)
class Violation:
    prop: str  # status | leak | rows | problem | oauth
    summary: str


@dataclass
class Rows:
    """Each database's tables before and after (``db:schema.table``), and what the
    gateway's idempotency table holds for the call's keys once it answered."""

    before: Snapshot
    after: Snapshot
    in_flight: int = 0
    # (status, response_status) of the caller's rows under the keys the call sent.
    kept: list[tuple[str, int | None]] = field(default_factory=list)


@dataclass(frozen=True)
class Registered:
    """The authorization server's clients: their redirect URIs, and the issuer."""

    issuer: str
    redirect_uris: Mapping[str, Sequence[str]]


def check(call: HttpCall, answer: Answer, rows: Rows, clients: Registered) -> list[Violation]:
    found = []
    if answer.timed_out:
        found.append(Violation("status", f"no answer within {HTTP_DEADLINE:g} s"))
    elif answer.status >= 500:
        found.append(Violation("status", f"answered {answer.status}"))
    echoed = call.strings()
    echoed += [html.escape(s) for s in echoed] + [html.escape(s, quote=False) for s in echoed]
    shown = answer.text + "\n" + "\n".join(f"{k}: {v}" for k, v in answer.headers)
    leaked = leaks(shown, echoed)
    if leaked:
        found.append(Violation("leak", "the caller sees " + ", ".join(map(repr, leaked))))
    found += _rows(answer, rows)
    if call.is_api:
        found += _problem(call, answer)
    else:
        found += _oauth(call, answer, clients)
    return found


def _rows(answer: Answer, rows: Rows) -> list[Violation]:
    found = []
    if rows.in_flight:
        found.append(Violation("rows", f"{rows.in_flight} Idempotency-Key(s) left in flight"))
    if 400 <= answer.status < 500 and not answer.timed_out:
        changed = diff(rows.before, rows.after)
        kept_as_answered = rows.kept and all(
            state == "done" and status == answer.status for state, status in rows.kept
        )
        if kept_as_answered:
            changed = [c for c in changed if not c.startswith(IDEMPOTENCY_TABLE + ":")]
        if changed:
            found.append(Violation("rows", f"refused ({answer.status}), yet " + "; ".join(changed)))
    return found


def _problem(call: HttpCall, answer: Answer) -> list[Violation]:
    if answer.status < 400 or call.method == "HEAD" or answer.timed_out:
        return []
    media = (answer.header("content-type") or "").split(";")[0].strip()
    if media != PROBLEM:
        return [Violation("problem", f"a {answer.status} as {media or 'no content type'!r}")]
    try:
        body = json.loads(answer.body)
    except ValueError:
        return [Violation("problem", f"a {answer.status} whose problem is not JSON")]
    if not isinstance(body, dict):
        return [Violation("problem", "the problem document is not an object")]
    wrong = []
    if body.get("status") != answer.status:
        wrong.append(f"status {body.get('status')!r} in a {answer.status}")
    if not str(body.get("type", "")).startswith(PROBLEM_TYPES):
        wrong.append(f"type {body.get('type')!r}")
    if not isinstance(body.get("title"), str):
        wrong.append("no title")
    return [Violation("problem", "; ".join(wrong))] if wrong else []


def _oauth(call: HttpCall, answer: Answer, clients: Registered) -> list[Violation]:
    path = call.path.split("?")[0]
    found = []
    if path in JSON_ENDPOINTS and call.method == "POST" and answer.status < 500:
        found += _json_error(answer, JSON_ENDPOINTS[path])
    challenge = answer.header("www-authenticate") or ""
    if (
        path == "/oauth2/userinfo"
        and answer.status in (401, 403)
        and not challenge.startswith("Bearer")
    ):
        found.append(Violation("oauth", f"a {answer.status} without a Bearer challenge"))
    location = answer.header("location")
    if 300 <= answer.status < 400 and location is not None:
        allowed = _allowed_targets(call, path, clients)
        target = urlunsplit((*urlsplit(location)[:3], "", ""))
        if path == "/oauth2/logout":
            target = location
        if target not in allowed:
            found.append(Violation("oauth", f"redirects to {location[:200]!r}"))
    return found


def _json_error(answer: Answer, codes: frozenset[str]) -> list[Violation]:
    media = (answer.header("content-type") or "").split(";")[0].strip()
    if answer.status in EDGE_REFUSALS and media == PROBLEM:
        return []  # the gateway's limits, before any endpoint (docs/gateway.md)
    if media != "application/json":
        return [Violation("oauth", f"a {answer.status} as {media or 'no content type'!r}")]
    try:
        body = json.loads(answer.body)
    except ValueError:
        return [Violation("oauth", f"a {answer.status} that is not JSON")]
    if answer.status == 200:
        return []
    error = body.get("error") if isinstance(body, dict) else None
    if error not in codes:
        return [Violation("oauth", f"a {answer.status} with error {error!r}")]
    return []


def _client_of(call: HttpCall, path: str) -> str:
    """The client the request names: its query's, or the form's authorize request's."""
    params = dict(call.query)
    if path in ("/oauth2/login", "/oauth2/consent") and call.body:
        form = dict(parse_qsl(call.body.decode("utf-8", "replace"), keep_blank_values=True))
        params = dict(parse_qsl(form.get("authorize", ""), keep_blank_values=True))
    return params.get("client_id", "")


def _allowed_targets(call: HttpCall, path: str, clients: Registered) -> set[str]:
    registered = list(clients.redirect_uris.get(_client_of(call, path), ()))
    if path == "/oauth2/logout":
        roots = {urlunsplit((*urlsplit(uri)[:2], "/", "", "")) for uri in registered}
        return roots
    if path in REDIRECTING:
        return {*registered, clients.issuer + "/oauth2/authorize"}
    return set()
