"""REST requests from the OpenAPI document: schemathesis's strategies, then bent.

``operations()`` reads docs/openapi.json (schemathesis 4), so a route added to the
gateway (and to the document, which a unit test keeps equal to the routes) is fuzzed
with no new code. For each operation, ``calls(op, aim)`` draws schemathesis's positive
(schema-valid) or negative (schema-breaking) case and then makes it reach further:

- path parameters are mostly seeded ids (real products, the caller's own orders,
  another user's, ids of nothing) and otherwise hostile strings;
- body fields named like the seeded ones (``product_id``, ``sku``, ``currency``) get
  real values, so a good share pass validation and reach the services;
- one body in four is replaced on the wire by something no schema describes: bad JSON,
  numbers of thousands of digits, deep nesting, NaN, a BOM, duplicate keys, the wrong
  content type, a body over the limit (with a Content-Length, or chunked);
- every POST's ``Idempotency-Key`` is fresh, missing, empty, too long, not ASCII, sent
  twice, or one of a few keys the run keeps reusing (so replays and mismatches happen);
- page tokens are real ones, random bytes, odd base64 JSON cursors (the gRPC fuzzer's);
  query parameters are repeated or unknown; the caller is any of ``aim.principals``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.core import NotSet
from schemathesis.core.result import Err
from schemathesis.openapi import from_path
from schemathesis.schemas import APIOperation

from devstack.launcher import REPO_ROOT
from tests.fuzz.edge_system import Principal
from tests.fuzz.http_call import HttpCall, sendable_header
from tests.fuzz.strategies import long_text, nasty_text, page_token_text, uuid_text, weighted

DOCUMENT = REPO_ROOT / "docs" / "openapi.json"
Strategy = st.SearchStrategy
Draw = Callable[[Strategy[Any]], Any]
IDEMPOTENCY = "Idempotency-Key"
REUSED_KEYS = ("fuzz-dup-1", "fuzz-dup-2", "fuzz-dup-3")
DROPPED = frozenset({"authorization", "content-length", "content-type", "host", "cookie"})
HOSTILE_PATH = (
    "..", "%2e%2e", "%2F", "a%2Fb", "%00", "%FF", "%C0%AE", "%E2%80%AE", "~", "%20", "%",
)  # fmt: skip


@dataclass(frozen=True)
class Aim:
    """What the seeded system offers the strategies."""

    principals: Sequence[Principal]
    products: Sequence[tuple[str, str]]  # (sku, product_id) on sale
    product_ids: Sequence[str]  # those, drafts and archived ones, and ids of nothing
    skus: Sequence[str]
    order_ids: Sequence[str]  # the customer's, the admin's, nobody's
    page_tokens: Sequence[str]
    max_body_bytes: int


def operations() -> list[APIOperation]:
    schema = from_path(str(DOCUMENT))
    found = []
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            raise ValueError(f"{DOCUMENT}: {result.err()}")
        found.append(result.ok())
    return found


def label_of(op: APIOperation) -> str:
    return f"{op.method.upper()} {op.path}"


def _hostile_segment() -> Strategy[str]:
    return st.one_of(
        st.sampled_from(HOSTILE_PATH),
        nasty_text.map(lambda s: quote(s, safe="")),
        long_text.map(lambda s: quote(s[:3000], safe="")),
        uuid_text.map(lambda s: quote(s, safe="")),
    )


def _path_value(name: str, generated: Any, aim: Aim) -> Strategy[str]:
    known = {"product_id": aim.product_ids, "order_id": aim.order_ids, "sku": aim.skus}.get(name)
    options: list[tuple[int, Strategy[str]]] = [
        (1, st.just(str(generated))),
        (1, _hostile_segment()),
    ]
    if known:
        options.insert(0, (4, st.sampled_from(list(known)).map(lambda s: quote(s, safe=""))))
    return weighted(*options)


def _realistic(node: Any, draw: Draw, aim: Aim) -> Any:
    """Seeded values for the fields the services look up (three times in four each)."""
    if isinstance(node, list):
        return [_realistic(item, draw, aim) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: _realistic(v, draw, aim) for k, v in node.items()}
    if "product_id" in out and draw(st.integers(0, 3)):
        sku, product_id = draw(st.sampled_from(list(aim.products)))
        out["product_id"] = product_id
        if "sku" in out:
            out["sku"] = sku
    elif "sku" in out and draw(st.integers(0, 3)):
        out["sku"] = draw(st.sampled_from(list(aim.skus)))
    if "items" in out and "from_cart" in out and draw(st.integers(0, 3)):
        del out["from_cart"]  # the model takes one or the other, which no schema says
    if "currency" in out and draw(st.integers(0, 3)):
        out["currency"] = "USD"
    if "quantity" in out and draw(st.integers(0, 2)):
        out["quantity"] = draw(st.sampled_from([1, 2, 3, 100, 101]))
    return out


def _raw_bodies(aim: Aim) -> Strategy[tuple[bytes, str]]:
    big = aim.max_body_bytes
    return st.sampled_from(
        [
            (b"", "empty"),
            (b"{", "truncated JSON"),
            (b'{"items": [', "truncated JSON"),
            (b"null", "JSON null"),
            (b"[]", "JSON array"),
            (b'"text"', "JSON string"),
            (b"\xff\xfe\x00{", "not UTF-8"),
            (b'\xef\xbb\xbf{"from_cart": true}', "a BOM"),
            (b'{"from_cart": true, "from_cart": false}', "duplicate keys"),
            (b'{"available": NaN}', "NaN"),
            (b'{"available": Infinity, "amount": {"amount_minor": -Infinity}}', "Infinity"),
            (b'{"available": 1e999999}', "a float overflow"),
            (b'{"available": 1' + b"0" * 5000 + b"}", "a 5001-digit number"),
            (b'{"amount": {"amount_minor": -1' + b"0" * 30 + b', "currency": "USD"}}', "huge"),
            (b"[" * 100_000 + b"]" * 100_000, "nested 100000 deep"),
            (b'{"items": ' + b"[" * 5_000 + b"]" * 5_000 + b"}", "nested 5000 deep"),
            (b'{"title": "\\ud800"}', "a lone surrogate escape"),
            (b'{"title": "\x00\x01"}', "raw control characters"),
            (b"[" + b" " * big + b"]", "over the body limit"),
            (b"{" + b'"a":1,' * (big // 6) + b'"b":1}', "over the body limit"),
        ]
    )


_CONTENT_TYPES = (
    "application/json", "application/json", "application/json", "text/plain",
    "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
    "application/json; charset=latin-1", "application/problem+json", "",
)  # fmt: skip


def _idempotency(draw: Draw) -> tuple[list[tuple[str, bytes]], str]:
    choice = draw(st.integers(0, 11))
    fresh = str(uuid.UUID(int=draw(st.integers(0, 2**128 - 1))))
    table: list[tuple[list[tuple[str, bytes]], str]] = [
        ([(IDEMPOTENCY, fresh.encode())], ""),
        ([(IDEMPOTENCY, fresh.encode())], ""),
        ([(IDEMPOTENCY, fresh.encode())], ""),
        ([(IDEMPOTENCY, fresh.encode())], ""),
        ([], "no Idempotency-Key"),
        ([(IDEMPOTENCY, b"")], "an empty Idempotency-Key"),
        ([(IDEMPOTENCY, b"   ")], "a blank Idempotency-Key"),
        ([(IDEMPOTENCY, b"k" * 65)], "a 65-character Idempotency-Key"),
        ([(IDEMPOTENCY, "ключ-\u202e".encode())], "a non-ASCII Idempotency-Key"),
        ([(IDEMPOTENCY, b"a\x7fb")], "a DEL in the Idempotency-Key"),
        ([(IDEMPOTENCY, draw(st.sampled_from(REUSED_KEYS)).encode())], "a reused key"),
        ([(IDEMPOTENCY, b"twice-1"), (IDEMPOTENCY, b"twice-2")], "two Idempotency-Keys"),
    ]
    return table[choice]


def _query(case_query: Any, draw: Draw, aim: Aim) -> tuple[list[tuple[str, str]], list[str]]:
    pairs: list[tuple[str, str]] = []
    notes: list[str] = []
    for name, value in (case_query or {}).items():
        values = value if isinstance(value, list) else [value]
        for v in values:
            pairs.append((str(name), v if isinstance(v, str) else json.dumps(v)))
    names = {name for name, _ in pairs}
    if "page_token" in names or draw(st.integers(0, 3)) == 0:
        token = draw(
            weighted(
                (2, st.sampled_from(list(aim.page_tokens) or [""])),
                (3, page_token_text),
                (1, st.just("")),
            )
        )
        pairs = [p for p in pairs if p[0] != "page_token"] + [("page_token", token)]
    if draw(st.integers(0, 5)) == 0:
        size = draw(st.sampled_from(["0", "1", "100", "101", "-1", "1e3", "0x10", "", "9" * 30]))
        pairs.append(("page_size", size))
        notes.append("page_size added")
    if pairs and draw(st.integers(0, 7)) == 0:
        name, value = draw(st.sampled_from(pairs))
        pairs.append((name, value + "0"))
        notes.append(f"{name} repeated")
    return pairs, notes


def calls(op: APIOperation, aim: Aim) -> Strategy[HttpCall]:
    label = label_of(op)
    method = op.method.upper()
    cases = weighted(
        (3, op.as_strategy(generation_mode=GenerationMode.POSITIVE)),
        (1, op.as_strategy(generation_mode=GenerationMode.NEGATIVE)),
    )
    has_body = "requestBody" in op.definition.raw

    @st.composite
    def build(draw: Draw) -> HttpCall:
        case = draw(cases)
        notes: list[str] = []
        path = op.path
        for name, value in (case.path_parameters or {}).items():
            path = path.replace("{" + name + "}", draw(_path_value(name, value, aim)) or "%20")
        query, query_notes = _query(case.query, draw, aim)
        notes += query_notes
        principal = draw(st.sampled_from(list(aim.principals)))
        headers: list[tuple[str, bytes]] = []
        for name, value in (case.headers or {}).items():
            if name.lower() not in DROPPED and name != IDEMPOTENCY:
                header = sendable_header(name, value)
                if header is not None:
                    headers.append(header)
        if principal.authorization is not None:
            headers.append(("Authorization", principal.authorization.encode()))
        if method == "POST":
            keys, note = _idempotency(draw)
            headers += keys
            notes += [note] if note else []
        body: bytes | None = None
        chunked = False
        if has_body:
            content_type = "application/json"
            if draw(st.integers(0, 3)) == 0:
                body, note = draw(_raw_bodies(aim))
                notes.append(note)
                chunked = draw(st.integers(0, 3)) == 0
                content_type = draw(st.sampled_from(_CONTENT_TYPES))
            elif isinstance(case.body, NotSet):
                body = None
            elif isinstance(case.body, bytes):
                body = case.body
            else:
                body = json.dumps(_realistic(case.body, draw, aim)).encode()
            if content_type:
                headers.append(("Content-Type", content_type.encode()))
        if draw(st.integers(0, 9)) == 0:
            headers.append(("traceparent", draw(st.sampled_from(_TRACEPARENTS))))
            notes.append("an odd traceparent")
        return HttpCall(
            label, method, path, tuple(query), tuple(headers), body, principal.name, chunked,
            tuple(notes),
        )  # fmt: skip

    return build()


_TRACEPARENTS = (
    b"00-zzzz-zzzz-01",
    b"00-" + b"0" * 32 + b"-" + b"0" * 16 + b"-01",
    b"ff-" + b"a" * 32 + b"-" + b"b" * 16 + b"-ff",
    b"00-" + b"a" * 5000,
    "00-\u00e9".encode(),
)


def unrouted(aim: Aim) -> Strategy[HttpCall]:
    """Methods and paths the API does not have: each must still be a problem document."""
    known = [op.path for op in operations()]

    @st.composite
    def build(draw: Draw) -> HttpCall:
        method = draw(st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]))
        base = draw(st.sampled_from(known)).split("{")[0].rstrip("/")
        tail = draw(st.one_of(st.just(""), _hostile_segment(), st.sampled_from(["x", "v2"])))
        path = f"{base}/{tail}" if tail else base
        principal = draw(st.sampled_from(list(aim.principals)))
        headers = () if principal.authorization is None else (
            ("Authorization", principal.authorization.encode()),
        )  # fmt: skip
        return HttpCall("ANY /api/v1/(unrouted)", method, path, (), headers, None, principal.name)

    return build()
