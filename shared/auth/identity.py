"""Who is calling: taken from the verified token, never from a request field."""

from __future__ import annotations

import enum
import uuid
from contextvars import ContextVar
from dataclasses import dataclass

from shared.errors import PermissionDenied, Unauthenticated


class Role(enum.StrEnum):
    CUSTOMER = "customer"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Identity:
    user_id: uuid.UUID
    role: Role
    # What the token was granted (shared/auth/scopes.py), and the OAuth2 client it was
    # issued to ("" for a token from before scopes existed in a test's hands).
    scopes: frozenset[str] = frozenset()
    client_id: str = ""

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes


# Set by the auth interceptor for the duration of one RPC (each RPC is its own task).
_current: ContextVar[Identity | None] = ContextVar("shop_identity", default=None)


def set_current_identity(identity: Identity | None) -> None:
    _current.set(identity)


def current_identity() -> Identity:
    """The caller of the RPC being served; the interceptor guarantees one exists."""
    identity = _current.get()
    if identity is None:
        raise Unauthenticated("this call needs a bearer token")
    return identity


def current_identity_or_none() -> Identity | None:
    """The caller of the RPC being served, or None for a call without a token (a public
    method such as Login, health, reflection)."""
    return _current.get()


def require_admin() -> Identity:
    identity = current_identity()
    if not identity.is_admin:
        raise PermissionDenied("this call needs the admin role")
    return identity
