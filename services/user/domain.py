"""Accounts, credentials, signing keys and OAuth2 grants, in plain Python with no I/O.

Hashing is pure computation but slow on purpose (argon2); callers on an event
loop run ``Passwords`` methods in a worker thread.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from shared.auth.identity import Role
from shared.auth.keys import key_id
from shared.auth.scopes import OIDC_SCOPES, scopes_for
from shared.errors import FailedPrecondition, InvalidArgument

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


# --- token signing keys (the rules are SigningKeyPolicy's) ---------------------------------------

# A JWKS every verifier holds in memory and re-reads on each change: keep it small.
MAX_PUBLISHED_KEYS = 8
RSA_KEY_BITS = 2048
# How often every user instance checks for keys due for removal: a quarter of the token
# lifetime, within these bounds (the check also runs when a removal falls due).
MIN_CHECK_SECONDS, MAX_CHECK_SECONDS = 1.0, 30.0


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    private_key_pem: str  # PKCS8, unencrypted (see the README on what production would do)
    created_at: datetime
    retired_at: datetime | None = None  # when a newer key took over

    def private_key(self) -> rsa.RSAPrivateKey:
        key = serialization.load_pem_private_key(self.private_key_pem.encode(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError(f"signing key {self.kid} is not an RSA key")
        return key

    def public_key(self) -> rsa.RSAPublicKey:
        return self.private_key().public_key()

    def retired(self, at: datetime) -> SigningKey:
        return replace(self, retired_at=at)


def signing_key_from_pem(pem: str | bytes, created_at: datetime) -> SigningKey:
    """An existing private key (the bootstrap key file): RSA, any size, kid from its public half."""
    raw = pem.encode() if isinstance(pem, str) else pem
    key = serialization.load_pem_private_key(raw, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("tokens are signed with RSA keys (RS256)")
    return _signing_key(key, created_at)


def new_signing_key(created_at: datetime) -> SigningKey:
    """A fresh RSA key (a tenth of a second of CPU or so: run it off the event loop)."""
    return _signing_key(
        rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_BITS), created_at
    )


def _signing_key(key: rsa.RSAPrivateKey, created_at: datetime) -> SigningKey:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return SigningKey(kid=key_id(key.public_key()), private_key_pem=pem, created_at=created_at)


@dataclass(frozen=True, slots=True)
class SigningKeyStatus:
    """What a caller may know about a key: never its private half."""

    kid: str
    created_at: datetime
    retired_at: datetime | None
    removes_at: datetime | None
    signing: bool


def newest_first(keys: Sequence[SigningKey]) -> list[SigningKey]:
    return sorted(keys, key=lambda k: (k.created_at, k.kid), reverse=True)


@dataclass(frozen=True, slots=True)
class SigningKeyPolicy:
    """The rules of rotation, given the longest token lifetime and a leeway for clocks
    and for instances that learn of a rotation a little late."""

    token_ttl: timedelta
    leeway: timedelta

    @property
    def removal_delay(self) -> timedelta:
        return self.token_ttl + self.leeway

    @property
    def check_interval_seconds(self) -> float:
        quarter = self.token_ttl.total_seconds() / 4
        return max(MIN_CHECK_SECONDS, min(quarter, MAX_CHECK_SECONDS))

    def signing_key(self, keys: Sequence[SigningKey]) -> SigningKey:
        """The newest key not retired (the newest of all if, oddly, every one is)."""
        if not keys:
            raise ValueError("there is no signing key")
        active = [k for k in keys if k.retired_at is None]
        return newest_first(active or keys)[0]

    def removes_at(self, key: SigningKey) -> datetime | None:
        return None if key.retired_at is None else key.retired_at + self.removal_delay

    def due_for_removal(self, keys: Sequence[SigningKey], now: datetime) -> list[SigningKey]:
        """Retired keys whose last token has expired; never the signing key."""
        if not keys:
            return []
        signing = self.signing_key(keys)
        return [
            k
            for k in keys
            if k.kid != signing.kid and (at := self.removes_at(k)) is not None and at <= now
        ]

    def published(self, keys: Sequence[SigningKey], now: datetime) -> list[SigningKey]:
        """The keys whose tokens verify, newest first: what the JWKS document holds."""
        due = {k.kid for k in self.due_for_removal(keys, now)}
        return [k for k in newest_first(keys) if k.kid not in due]

    def next_removal(self, keys: Sequence[SigningKey], now: datetime) -> datetime | None:
        """When the next published key falls due, if any is retired."""
        if not keys:
            return None
        signing = self.signing_key(keys).kid
        pending = [
            at
            for k in self.published(keys, now)
            if k.kid != signing and (at := self.removes_at(k)) is not None
        ]
        return min(pending, default=None)

    def rotate(
        self, keys: Sequence[SigningKey], new_key: SigningKey, now: datetime
    ) -> tuple[SigningKey, list[SigningKey]]:
        """The new signing key and the keys it retires (every one not retired yet)."""
        published = self.published(keys, now)
        if len(published) >= MAX_PUBLISHED_KEYS:
            raise FailedPrecondition(
                f"{len(published)} signing keys are still published (at most"
                f" {MAX_PUBLISHED_KEYS}); wait until the oldest is removed"
                f" ({self.next_removal(keys, now)})"
            )
        if any(k.kid == new_key.kid for k in keys):
            raise FailedPrecondition(f"signing key {new_key.kid} exists already")
        new_key = replace(new_key, created_at=now, retired_at=None)
        return new_key, [k.retired(now) for k in keys if k.retired_at is None]

    def describe(self, keys: Sequence[SigningKey], now: datetime) -> list[SigningKeyStatus]:
        if not keys:
            return []
        signing = self.signing_key(keys)
        return [
            SigningKeyStatus(
                kid=k.kid,
                created_at=k.created_at,
                retired_at=k.retired_at,
                removes_at=self.removes_at(k),
                signing=k.kid == signing.kid,
            )
            for k in self.published(keys, now)
        ]


# --- OAuth2 (adapters/oauth/): each secret handed out is random, kept only as its SHA-256 ---------
CODE_TTL = timedelta(seconds=60)
# Failed sign-ins within the window, per email and per client IP: past either, none is checked.
LOGIN_WINDOW, MAX_FAILURES_PER_EMAIL, MAX_FAILURES_PER_IP = timedelta(minutes=15), 5, 20
Redemption = Literal["grant", "replay", "invalid"]  # replay: revoke everything it gave


def secret_hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class OAuthClient:
    client_id: str
    name: str
    secret_hash: str | None  # None: a public client (browser app, CLI); PKCE is its proof
    redirect_uris: tuple[str, ...]
    grant_types: frozenset[str]
    scopes: frozenset[str]
    first_party: bool = False  # the project's own app: no consent page

    def authenticates(self, secret: str) -> bool:
        if self.secret_hash is None:
            return not secret
        return hmac.compare_digest(self.secret_hash, secret_hash(secret))

    def redirects_to(self, uri: str) -> bool:
        """Exact string match: no prefix, pattern or normalisation (RFC 9700 §4.1.3)."""
        return uri in self.redirect_uris

    def grantable(self, requested: frozenset[str], role: Role) -> frozenset[str]:
        """What a person of this role may grant this client: within both."""
        return requested & self.scopes & (scopes_for(role) | OIDC_SCOPES)


@dataclass(frozen=True, slots=True, kw_only=True)
class Issued:  # a code or a refresh token as stored: by its hash, single-use
    hash: str
    client_id: str
    user_id: uuid.UUID
    scopes: frozenset[str]
    auth_time: datetime  # when the person signed in
    expires_at: datetime
    used_at: datetime | None = None
    revoked_at: datetime | None = None
    family_id: uuid.UUID | None = None  # the refresh tokens' chain (a code's: those it gave)


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthorizationCode(Issued):
    redirect_uri: str
    code_challenge: str  # S256 only
    nonce: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RefreshToken(Issued):
    access_jti: str  # the access token issued with it


def redeem(item: Issued | None, client_id: str, now: datetime) -> Redemption:
    """Presenting a code or a refresh token. Another client's is refused, not burnt."""
    if item is None or item.client_id != client_id or item.revoked_at is not None:
        return "invalid"
    if item.used_at is not None:
        return "replay"
    return "grant" if now < item.expires_at else "invalid"


def login_blocked(email_failures: int, ip_failures: int) -> bool:
    return email_failures >= MAX_FAILURES_PER_EMAIL or ip_failures >= MAX_FAILURES_PER_IP
