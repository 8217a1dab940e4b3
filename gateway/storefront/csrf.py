"""CSRF tokens for the storefront's forms: the synchronizer-token pattern.

Each session holds one random secret; every form carries it, and a post whose token
does not match is refused before anything runs. SameSite=Lax on the session cookie
already keeps other sites' posts from carrying the cookie; the token is the second
lock for browsers or proxies that do not honour SameSite.
"""

from __future__ import annotations

import hmac
import secrets

TOKEN_BYTES = 32
FIELD = "csrf_token"


def new_secret() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def matches(expected: str | None, offered: str | None) -> bool:
    """Constant-time; a session without a secret matches nothing."""
    if not expected or not offered:
        return False
    return hmac.compare_digest(expected.encode(), offered.encode())
