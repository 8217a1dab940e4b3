"""Pages from templates, and the friendly page a failure becomes.

A person never sees a status code's jargon, an exception or a stack: each problem
(gateway/problems.py) becomes a sentence about what they can do, with the request's
trace id to quote, and the HTTP status the problem had.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from gateway.problems import Problem, as_problem
from shared.observability.trace_context import current_trace_id

log = logging.getLogger(__name__)
TEMPLATES = Jinja2Templates(directory=Path(__file__).parent / "templates")
STATIC_DIR = Path(__file__).parent / "static"
CURRENCY = "USD"

_FRIENDLY: dict[int, tuple[str, str]] = {
    400: ("That did not work", "Something in the form was not right: {detail}."),
    403: ("Not allowed", "Your account may not do this."),
    404: ("Not found", "We could not find what you were looking for."),
    409: ("That changed meanwhile", "{detail}. Please look again and retry."),
    413: ("Too much at once", "That request was too large."),
    422: ("That did not work", "{detail}."),
    429: ("Slow down a little", "Too many requests in a short time; please wait a moment."),
    502: ("A part of the shop is not answering", "Please try again in a moment."),
    503: ("A part of the shop is not answering", "Please try again in a moment."),
    504: ("The shop is slow right now", "Please try again in a moment."),
}
_BROKEN = (
    "Something went wrong",
    "Please try again; if it keeps happening, quote the reference below.",
)
_SERVICE_NAMES = {
    "product": "the catalog",
    "inventory": "stock",
    "order": "orders",
    "payment": "the wallet",
    "user": "sign-in",
}


def page(
    request: Request, name: str, context: dict[str, Any], status_code: int = 200
) -> HTMLResponse:
    """``context`` plus what every page shows: who is signed in, the CSRF token, the
    cart's size and a notice, which the session layer left on ``request.state``."""
    base: dict[str, Any] = {
        "user": getattr(request.state, "shopper", None),
        "csrf_token": getattr(request.state, "csrf_token", ""),
        "cart_count": getattr(request.state, "cart_count", 0),
        "notice": None,
    }
    return TEMPLATES.TemplateResponse(request, name, {**base, **context}, status_code=status_code)


def friendly(problem: Problem) -> tuple[str, str]:
    """The title and sentence a person reads for ``problem``."""
    status = problem.status
    title, message = _FRIENDLY.get(status, _BROKEN)
    detail = (problem.detail or problem.rule.title).rstrip(".")
    if status in (502, 503, 504):
        service = next((n for s, n in _SERVICE_NAMES.items() if s in detail), None)
        if service is not None:
            message = f"We cannot reach {service} right now. Please try again in a moment."
    if status >= 500 and status not in (502, 503, 504):
        detail = ""
    return title, message.format(detail=detail)


def problem_page(request: Request, error: BaseException) -> HTMLResponse:
    """The page for a failure below the routes; an unknown one is a 500 without detail."""
    problem = as_problem(error)
    if problem is None:
        log.exception("storefront page failed", exc_info=error)
        return message_page(request, 500, *_BROKEN)
    title, message = friendly(problem)
    context = {"title": title, "message": message, "trace_id": current_trace_id()}
    response = page(request, "error.html", context, status_code=problem.status)
    for name, value in problem.headers.items():
        if name.lower() == "retry-after":
            response.headers[name] = value
    return response


def message_page(request: Request, status: int, title: str, message: str) -> HTMLResponse:
    context = {"title": title, "message": message, "trace_id": current_trace_id()}
    return page(request, "error.html", context, status_code=status)
