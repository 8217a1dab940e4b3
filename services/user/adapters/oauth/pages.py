"""The server-rendered pages (sign-in, consent, errors): Jinja2 templates, the security
headers every response carries, the cookies, and the CSRF token each form posts back.

The CSRF token is a double-submit token bound to its page: a random cookie (SameSite=Strict,
HttpOnly, path /oauth2) and, in the form, HMAC-SHA256(cookie, page + authorize request). A
cross-site form cannot read the cookie, so cannot forge the field; a token of the sign-in
page is no good on the consent page, nor for another authorize request. No server-side
secret, so any instance checks any instance's form.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from shared.auth.scopes import (
    CATALOG_ADMIN,
    EMAIL,
    OPENID,
    ORDERS_READ,
    ORDERS_WRITE,
    PROFILE,
    STOCK_ADMIN,
    WALLET_READ,
    WALLET_WRITE,
)

HERE = Path(__file__).parent
STYLESHEET = (HERE / "static" / "oauth.css").read_bytes()
SESSION_COOKIE = "shop_oauth_session"
CSRF_COOKIE = "shop_oauth_csrf"
COOKIE_PATH = "/oauth2"
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
# What the consent page says each scope lets the application do.
SCOPE_TEXT = {
    OPENID: "Know who you are (your account id)",
    PROFILE: "See your profile (your role)",
    EMAIL: "See your email address",
    ORDERS_READ: "See your orders",
    ORDERS_WRITE: "Place and cancel orders for you",
    WALLET_READ: "See your wallet balance",
    WALLET_WRITE: "Top up your wallet",
    CATALOG_ADMIN: "Change the catalog (admins)",
    STOCK_ADMIN: "Change stock levels (admins)",
}

_templates = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(default=True),
    auto_reload=False,
)


def page(
    template: str, status: int = 200, headers: dict[str, str] | None = None, **context: Any
) -> HTMLResponse:
    body = _templates.get_template(template).render(**context)
    return HTMLResponse(body, status, headers={"Cache-Control": "no-store", **(headers or {})})


def error_page(title: str, message: str, status: int = 400) -> HTMLResponse:
    """What a person sees when nothing can be sent back to the application safely."""
    return page("error.html", status, title=title, message=message)


# --- cookies and the CSRF token ----------------------------------------------------------------


def set_cookie(
    response: Response, name: str, value: str, *, max_age: int, strict: bool, secure: bool
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=COOKIE_PATH,
        secure=secure,
        httponly=True,
        samesite="strict" if strict else "lax",
    )


def csrf_secret(request: Request) -> tuple[str, bool]:
    """The browser's CSRF cookie, or a new one; True if it must be set."""
    current = request.cookies.get(CSRF_COOKIE, "")
    if len(current) >= 32:
        return current, False
    return secrets.token_urlsafe(32), True


def csrf_token(secret: str, page_name: str, authorize: str) -> str:
    message = f"{page_name}\n{authorize}".encode("utf-8", "surrogatepass")
    mac = hmac.new(secret.encode("utf-8", "surrogatepass"), message, hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode()


def csrf_ok(request: Request, page_name: str, authorize: str, offered: str) -> bool:
    secret = request.cookies.get(CSRF_COOKIE, "")
    if len(secret) < 32 or not offered:
        return False
    # As bytes: compare_digest takes no str with a non-ASCII character, and a form can hold any.
    expected = csrf_token(secret, page_name, authorize).encode()
    return hmac.compare_digest(expected, offered.encode("utf-8", "surrogatepass"))


def form_page(
    request: Request,
    template: str,
    page_name: str,
    authorize: str,
    *,
    secure: bool,
    status: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    """A page with a form that posts ``authorize`` back, with its CSRF token."""
    secret, fresh = csrf_secret(request)
    response = page(
        template,
        status,
        headers,
        authorize=authorize,
        csrf=csrf_token(secret, page_name, authorize),
        **context,
    )
    if fresh:
        set_cookie(response, CSRF_COOKIE, secret, max_age=3600, strict=True, secure=secure)
    return response
