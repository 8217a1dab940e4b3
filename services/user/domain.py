"""Accounts and credentials, in plain Python with no I/O.

Hashing is pure computation but slow on purpose (argon2); callers on an event
loop run ``Passwords`` methods in a worker thread.
"""

from __future__ import annotations

import re
import secrets
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from shared.auth.identity import Role
from shared.errors import InvalidArgument

MAX_EMAIL = 254  # RFC 5321's limit on a forward path
MIN_PASSWORD = 8
MAX_PASSWORD = 128
# Deliberately loose: one '@', no whitespace, a dotted domain. Only a sent mail proves more.
EMAIL_PATTERN = re.compile(r"[^@\s]+@[^@\s.]+(\.[^@\s.]+)+")


@dataclass(frozen=True, slots=True)
class User:
    user_id: uuid.UUID
    email: str
    password_hash: str
    role: Role
    created_at: datetime
    updated_at: datetime

    def with_password_hash(self, password_hash: str) -> User:
        return replace(self, password_hash=password_hash, updated_at=datetime.now(UTC))

    def promoted_to_admin(self) -> User:
        return replace(self, role=Role.ADMIN, updated_at=datetime.now(UTC))


def normalise_email(value: str) -> str:
    email = value.strip().lower()
    if not email:
        raise InvalidArgument("email", "is required")
    if len(email) > MAX_EMAIL:
        raise InvalidArgument("email", f"must be at most {MAX_EMAIL} characters")
    if not EMAIL_PATTERN.fullmatch(email):
        raise InvalidArgument("email", "must look like name@example.com")
    return email


def new_password(value: str) -> str:
    """A password chosen at registration: the length rules apply."""
    if not value:
        raise InvalidArgument("password", "is required")
    if not MIN_PASSWORD <= len(value) <= MAX_PASSWORD:
        raise InvalidArgument(
            "password", f"must be {MIN_PASSWORD} to {MAX_PASSWORD} characters long"
        )
    return value


def offered_password(value: str) -> str:
    """A password offered at login: only bounded, so a too-short guess is just wrong.

    The upper bound stops megabyte 'passwords' from buying argon2 time for free.
    """
    if not value:
        raise InvalidArgument("password", "is required")
    if len(value) > MAX_PASSWORD:
        raise InvalidArgument("password", f"must be at most {MAX_PASSWORD} characters")
    return value


def new_user(*, email: str, password_hash: str, role: Role = Role.CUSTOMER) -> User:
    now = datetime.now(UTC)
    return User(
        user_id=uuid.uuid4(),
        email=normalise_email(email),
        password_hash=password_hash,
        role=role,
        created_at=now,
        updated_at=now,
    )


class Passwords:
    """argon2 hashing plus a decoy hash, so an unknown email costs as much as a wrong password."""

    def __init__(self, hasher: PasswordHasher | None = None) -> None:
        self._hasher = hasher or PasswordHasher()
        self._decoy = self._hasher.hash(secrets.token_urlsafe(24))

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    def verify_decoy(self, password: str) -> bool:
        """Burns the time of a real verify; always False."""
        self.verify(self._decoy, password)
        return False

    def needs_rehash(self, password_hash: str) -> bool:
        return self._hasher.check_needs_rehash(password_hash)
