"""The OAuth2 scopes that the services' access policies check.

A token carries the scopes its client was granted (``scope``, space-separated, RFC 8693
§4.2). A person's token from the user service's Login, or from the storefront's
authorization-code flow, holds what the person's role allows; a machine client holds
what it was registered with, never more than a customer.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from shared.auth.identity import Role

# Reading the catalog and its stock: all a visitor who is not signed in needs (the
# gateway's own client-credentials token asks for this one alone).
CATALOG_READ: Final = "catalog:read"
ORDERS_READ: Final = "orders:read"
ORDERS_WRITE: Final = "orders:write"
WALLET_READ: Final = "wallet:read"
WALLET_WRITE: Final = "wallet:write"
CATALOG_ADMIN: Final = "catalog:admin"
STOCK_ADMIN: Final = "stock:admin"
# OpenID Connect's own: the ID token and userinfo, no service method needs them.
OPENID: Final = "openid"
PROFILE: Final = "profile"
EMAIL: Final = "email"

CUSTOMER_SCOPES: Final = frozenset(
    {CATALOG_READ, ORDERS_READ, ORDERS_WRITE, WALLET_READ, WALLET_WRITE}
)
ADMIN_SCOPES: Final = CUSTOMER_SCOPES | {CATALOG_ADMIN, STOCK_ADMIN}
OIDC_SCOPES: Final = frozenset({OPENID, PROFILE, EMAIL})
ALL_SCOPES: Final = ADMIN_SCOPES | OIDC_SCOPES


def scopes_for(role: Role) -> frozenset[str]:
    """Everything a person with this role may be granted."""
    return ADMIN_SCOPES if role is Role.ADMIN else CUSTOMER_SCOPES


def parse_scope(value: str) -> frozenset[str]:
    """A ``scope`` claim or parameter (space-separated) as a set."""
    return frozenset(value.split())


def format_scope(scopes: Iterable[str]) -> str:
    """The claim's form: sorted, so equal sets give equal strings."""
    return " ".join(sorted(set(scopes)))
