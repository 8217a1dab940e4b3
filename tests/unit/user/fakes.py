"""The user service's ports in memory, with the semantics of its SQL: the unique email,
the compare-and-set on a password hash, ``ON CONFLICT DO NOTHING`` for a signing key,
etcd's JWKS key for the keyring; and the OAuth2 tables' (migrations/0003_oauth.sql): one
row per hash, S256 challenges only, a client with client_credentials has a secret, a
family revoked row by row, a sign-in session only while it lasts and its user exists."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from services.user.domain import (
    AuthorizationCode,
    OAuthClient,
    RefreshToken,
    SigningKey,
    SigningKeyStatus,
    User,
    newest_first,
)
from shared.auth.identity import Role
from shared.auth.tokens import LOGIN_CLIENT
from shared.errors import AlreadyExists
from tests.support.fake_unit_of_work import FakeUnitOfWork


class FakeUserRepository:
    def __init__(self) -> None:
        self.rows: dict[uuid.UUID, User] = {}
        self.locked: list[str] = []  # emails read FOR UPDATE, in order

    async def add(self, user: User) -> None:
        if user.user_id in self.rows or any(u.email == user.email for u in self.rows.values()):
            raise AlreadyExists(f"an account for {user.email} already exists")
        self.rows[user.user_id] = user

    async def get(self, user_id: uuid.UUID) -> User | None:
        return self.rows.get(user_id)

    async def get_by_email(self, email: str, *, for_update: bool = False) -> User | None:
        if for_update:
            self.locked.append(email)
        return next((u for u in self.rows.values() if u.email == email), None)

    async def update_password_hash(self, user: User, *, expected_hash: str) -> bool:
        stored = self.rows.get(user.user_id)
        if stored is None or stored.password_hash != expected_hash:
            return False
        self.rows[user.user_id] = replace(
            stored, password_hash=user.password_hash, updated_at=user.updated_at
        )
        return True

    async def update_role(self, user: User) -> None:
        stored = self.rows.get(user.user_id)
        if stored is not None:
            self.rows[user.user_id] = replace(stored, role=user.role, updated_at=user.updated_at)


class FakeSigningKeyRepository:
    def __init__(self) -> None:
        self.keys: dict[str, SigningKey] = {}
        self.locks = 0

    async def lock(self) -> None:
        self.locks += 1

    async def all(self) -> list[SigningKey]:
        return newest_first(list(self.keys.values()))

    async def add(self, key: SigningKey) -> bool:
        if key.kid in self.keys:
            return False
        self.keys[key.kid] = key
        return True

    async def retire(self, kids: Sequence[str], at: datetime) -> None:
        for kid in kids:
            key = self.keys.get(kid)
            if key is not None and key.retired_at is None:
                self.keys[kid] = key.retired(at)

    async def remove(self, kids: Sequence[str]) -> int:
        gone = [kid for kid in dict.fromkeys(kids) if kid in self.keys]
        for kid in gone:
            del self.keys[kid]
        return len(gone)


_HASH = re.compile(r"[0-9a-f]{64}")
_S256 = re.compile(r"[A-Za-z0-9_-]{43}")


class FakeOAuthClientRepository:
    def __init__(self) -> None:
        self.rows: dict[str, OAuthClient] = {}

    async def get(self, client_id: str) -> OAuthClient | None:
        return self.rows.get(client_id)

    async def replace_all(self, clients: Sequence[OAuthClient]) -> None:
        for c in clients:
            if "client_credentials" in c.grant_types and c.secret_hash is None:
                raise ValueError("CHECK: client_credentials needs a secret")
            if "authorization_code" in c.grant_types and not c.redirect_uris:
                raise ValueError("CHECK: authorization_code needs a redirect URI")
        self.rows = {c.client_id: c for c in clients}


class FakeAuthorizationCodeRepository:
    def __init__(self) -> None:
        self.rows: dict[str, AuthorizationCode] = {}

    async def add(self, code: AuthorizationCode) -> None:
        if code.hash in self.rows:
            raise AlreadyExists("duplicate code_hash")
        if not _HASH.fullmatch(code.hash) or not _S256.fullmatch(code.code_challenge):
            raise ValueError("CHECK: a code_hash is SHA-256 hex, a code_challenge S256")
        self.rows[code.hash] = code

    async def get(self, code_hash: str, *, for_update: bool = False) -> AuthorizationCode | None:
        return self.rows.get(code_hash)

    async def mark_used(self, code_hash: str, at: datetime, family_id: uuid.UUID) -> None:
        self.rows[code_hash] = replace(self.rows[code_hash], used_at=at, family_id=family_id)


class FakeRefreshTokenRepository:
    def __init__(self) -> None:
        self.rows: dict[str, RefreshToken] = {}

    async def add(self, token: RefreshToken) -> None:
        if token.hash in self.rows:
            raise AlreadyExists("duplicate token_hash")
        if not _HASH.fullmatch(token.hash) or token.family_id is None:
            raise ValueError("CHECK: a token_hash is SHA-256 hex; family_id NOT NULL")
        self.rows[token.hash] = token

    async def get(self, token_hash: str, *, for_update: bool = False) -> RefreshToken | None:
        return self.rows.get(token_hash)

    async def find_by_access_jti(self, jti: str) -> RefreshToken | None:
        return next((t for t in self.rows.values() if t.access_jti == jti), None)

    async def mark_used(self, token_hash: str, at: datetime) -> None:
        self.rows[token_hash] = replace(self.rows[token_hash], used_at=at)

    async def revoke_family(self, family_id: uuid.UUID, at: datetime) -> int:
        live = [t for t in self.rows.values() if t.family_id == family_id and t.revoked_at is None]
        for t in live:
            self.rows[t.hash] = replace(t, revoked_at=at)
        return len(live)


class FakeLoginSessionRepository:
    def __init__(self, users: Callable[[], FakeUserRepository]) -> None:
        self.rows: dict[str, tuple[uuid.UUID, datetime, datetime]] = {}
        self._users = users  # the join

    async def add(
        self, session_hash: str, user_id: uuid.UUID, auth_time: datetime, expires_at: datetime
    ) -> None:
        if session_hash in self.rows or user_id not in self._users().rows:
            raise ValueError("duplicate session_hash, or no such user (the foreign key)")
        self.rows[session_hash] = (user_id, auth_time, expires_at)

    async def get(self, session_hash: str, now: datetime) -> tuple[User, datetime] | None:
        row = self.rows.get(session_hash)
        if row is None or row[2] <= now or (user := self._users().rows.get(row[0])) is None:
            return None
        return user, row[1]

    async def remove(self, session_hash: str) -> None:
        self.rows.pop(session_hash, None)


class FakeLoginAttemptRepository:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, datetime]] = []

    async def record_failure(self, email: str, ip: str, at: datetime) -> None:
        self.rows.append((email, ip, at))

    async def failures(self, *, email: str, ip: str, since: datetime) -> tuple[int, int]:
        recent = [r for r in self.rows if r[2] > since]
        return sum(r[0] == email for r in recent), sum(r[1] == ip for r in recent)


class FakeUserUnitOfWork(FakeUnitOfWork):
    """Its own factory: ``use_case(uow, ...)`` opens it as the service opens a new one."""

    REPOSITORIES = (
        "users",
        "signing_keys",
        "oauth_clients",
        "oauth_codes",
        "refresh_tokens",
        "login_sessions",
        "login_attempts",
    )

    def __init__(self) -> None:
        super().__init__()
        self.users = FakeUserRepository()
        self.signing_keys = FakeSigningKeyRepository()
        self.oauth_clients = FakeOAuthClientRepository()
        self.oauth_codes = FakeAuthorizationCodeRepository()
        self.refresh_tokens = FakeRefreshTokenRepository()
        self.login_sessions = FakeLoginSessionRepository(lambda: self.users)
        self.login_attempts = FakeLoginAttemptRepository()

    def __call__(self) -> FakeUserUnitOfWork:
        return self


EXPIRES_AT = datetime(2030, 1, 1, tzinfo=UTC)


class FakeSigningKeys:
    """Signs with a made-up token that names whom it was issued to."""

    def __init__(self, statuses: list[SigningKeyStatus] | None = None) -> None:
        self.issued: list[tuple[uuid.UUID, Role]] = []
        self.rotations = 0
        self._statuses = statuses or []

    def issue(
        self,
        user_id: uuid.UUID,
        role: Role,
        *,
        scopes: Iterable[str] | None = None,
        client_id: str = LOGIN_CLIENT,
        ttl: timedelta | None = None,
    ) -> tuple[str, datetime]:
        self.issued.append((user_id, role))
        return f"token-for-{user_id}-{role.value}", EXPIRES_AT

    async def rotate(self) -> list[SigningKeyStatus]:
        self.rotations += 1
        return self._statuses

    def sign(self, claims: Mapping[str, Any]) -> str:
        return f"signed-{sorted(claims.items())}"

    async def statuses(self) -> list[SigningKeyStatus]:
        return self._statuses


class FakeEtcd:
    """The two calls the keyring makes on etcd: get and put, on one key."""

    def __init__(self) -> None:
        self.values: dict[bytes, bytes] = {}
        self.puts = 0
        self.down = False

    async def get(self, key: bytes) -> Any:
        if self.down:
            raise OSError("etcd is down")
        value = self.values.get(key)
        return None if value is None else SimpleNamespace(value=value)

    async def put(self, key: bytes, value: bytes) -> None:
        if self.down:
            raise OSError("etcd is down")
        self.values[key] = value
        self.puts += 1


class Clock:
    def __init__(self, now: datetime = datetime(2026, 1, 1, tzinfo=UTC)) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)


class JwtKeys(FakeSigningKeys):
    """Real RS256 JWTs (the OAuth2 grants read a token's jti), and what each was given."""

    def __init__(self) -> None:
        super().__init__()
        self.grants: list[dict[str, Any]] = []

    def issue(
        self,
        user_id: uuid.UUID,
        role: Role,
        *,
        scopes: Iterable[str] | None = None,
        client_id: str = LOGIN_CLIENT,
        ttl: timedelta | None = None,
    ) -> tuple[str, datetime]:
        expires_at = datetime.now(UTC) + (ttl or timedelta(hours=1))
        claims = {
            "sub": str(user_id),
            "role": role.value,
            "scope": " ".join(sorted(scopes or ())),
            "client_id": client_id,
            "jti": uuid.uuid4().hex,
        }
        self.grants.append(claims)
        return jwt.encode(claims, _RSA, algorithm="RS256"), expires_at

    def sign(self, claims: Mapping[str, Any]) -> str:
        return jwt.encode(dict(claims), _RSA, algorithm="RS256")
