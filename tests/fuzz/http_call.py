"""One HTTP request of the edge fuzzer, as sent: what the strategies make and the checks read.

A call is plain data (method, path, query pairs, header pairs with byte values, a raw
body), so a strategy can say anything a client could put on the wire, repeated
parameters and headers, bytes that are not UTF-8 and bodies that are not JSON included.
Values the strategy cannot know (a fresh authorization code, a signed-in session) are
placeholders (``Needs``) that the fuzzer fills in just before sending.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import unquote, unquote_plus

Pairs = tuple[tuple[str, str], ...]
HeaderPairs = tuple[tuple[str, bytes], ...]
TOKEN_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


@dataclass(frozen=True)
class HttpCall:
    label: str  # the route's template, e.g. "GET /api/v1/orders/{order_id}"
    method: str
    path: str  # as sent: percent-encoded
    query: Pairs = ()
    headers: HeaderPairs = ()
    body: bytes | None = None
    caller: str = "none"
    chunked: bool = False  # the body sent without a Content-Length
    notes: tuple[str, ...] = ()  # how the call was bent, for the report
    # Placeholders the fuzzer fills in: name -> what (see edge_fuzzer.Needs).
    needs: tuple[tuple[str, str], ...] = field(default=())

    @property
    def is_api(self) -> bool:
        return self.path.startswith("/api/")

    def with_header(self, name: str, value: str | bytes) -> HttpCall:
        raw = value if isinstance(value, bytes) else value.encode("latin-1", "replace")
        return replace(self, headers=(*self.headers, (name, raw)))

    def header(self, name: str) -> bytes | None:
        found = [v for k, v in self.headers if k.lower() == name.lower()]
        return found[0] if found else None

    def strings(self) -> list[str]:
        """Everything the call carried as text: what an answer may echo back."""
        found = [unquote(part) for part in self.path.split("/") if part]
        found += [v for pair in self.query for v in pair]
        found += [v.decode("latin-1") for _, v in self.headers]
        found += [v.decode("utf-8", "replace") for _, v in self.headers]
        if self.body:
            text = self.body.decode("utf-8", "replace")
            found.append(text)
            found += _json_strings(text)
            found += [unquote_plus(p) for part in text.split("&") for p in part.split("=", 1)]
        return [s for s in found if s]

    def describe(self, limit: int = 300) -> str:
        def cut(text: str) -> str:
            return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"

        query = "&".join(f"{k}={v}" for k, v in self.query)
        lines = [f"{self.method} {cut(self.path)}" + (f"?{cut(query)}" if query else "")]
        lines += [f"{name}: {cut(value.decode('latin-1'))!r}" for name, value in self.headers]
        if self.body is not None:
            chunked = " (chunked)" if self.chunked else ""
            lines.append(f"body{chunked}: {cut(repr(self.body))}")
        lines += [f"({note})" for note in self.notes]
        return "\n".join(lines)


def _json_strings(text: str) -> list[str]:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return []
    out: list[str] = []

    def walk(node: Any, depth: int = 0) -> None:
        if depth > 50:
            return
        if isinstance(node, str):
            out.append(node)
        elif isinstance(node, dict):
            for k, v in node.items():
                out.append(str(k))
                walk(v, depth + 1)
        elif isinstance(node, list):
            for v in node:
                walk(v, depth + 1)

    walk(value)
    return out


def sendable_header(name: str, value: Any) -> tuple[str, bytes] | None:
    """A generated header as a client can send it, or None (no CR, LF or NUL; latin-1)."""
    text = value if isinstance(value, str) else json.dumps(value)
    if not TOKEN_NAME.match(name) or any(c in text for c in "\r\n\0") or text != text.strip():
        return None
    try:
        return name, text.encode("latin-1")
    except UnicodeEncodeError:
        return None
