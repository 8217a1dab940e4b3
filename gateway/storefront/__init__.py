"""The storefront: server-rendered pages (Jinja2 + htmx) on the gateway's backends,
with the tokens kept on the server behind an HttpOnly cookie (the BFF pattern)."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from gateway.storefront import admin, live, login, pages
from gateway.storefront.render import STATIC_DIR, message_page
from gateway.storefront.web_session import CsrfRefused, SignInRequired


def install(app: FastAPI) -> None:
    """The pages, their static files, and how a page refuses a visitor."""
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    for module in (login, pages, live, admin):
        app.include_router(module.router)

    async def sign_in_first(request: Request, error: Exception) -> Response:
        assert isinstance(error, SignInRequired)
        target = quote(login.safe_next(error.next_path), safe="/")
        return RedirectResponse(f"/auth/login?next={target}", status_code=303)

    async def csrf_refused(request: Request, error: Exception) -> Response:
        return message_page(
            request,
            403,
            "Please try again",
            "This form expired; reload the page and submit it again.",
        )

    app.add_exception_handler(SignInRequired, sign_in_first)
    app.add_exception_handler(CsrfRefused, csrf_refused)
