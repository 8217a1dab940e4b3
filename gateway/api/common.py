"""What the routers share: paging links, the Idempotency-Key header, documented errors."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Header, Query, Request, Response

from gateway.idempotency import HEADER
from gateway.problems import COMMON, documented

PREFIX = "/api/v1"

PageSize = Annotated[int, Query(ge=1, le=100, description="1..100 items a page")]
PageToken = Annotated[
    str, Query(max_length=1024, description="The `next_page_token` of the page before")
]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias=HEADER,
        description="Required on every POST: 1..64 printable characters chosen by the client."
        " A retry with the same key and body gets the first answer again.",
    ),
]


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """A route's documented problems: its own, and what any route may answer."""
    return documented(*sorted({*statuses, *COMMON}))


def link_next(request: Request, response: Response, next_page_token: str) -> str | None:
    """Sets ``Link: <...>; rel="next"`` (RFC 8288) when there is a next page; returns the
    token, or None on the last page."""
    if not next_page_token:
        return None
    url = request.url.include_query_params(page_token=next_page_token)
    response.headers["Link"] = f'<{url.path}?{url.query}>; rel="next"'
    return next_page_token
