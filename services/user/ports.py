"""What the user service's use cases need from the outside world, as Protocols: the
repositories behind one unit of work (persistence.py implements them on asyncpg, the unit
tests in memory) and the signing keys (adapters/keyring.py)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from services.user.domain import (
    AuthorizationCode,
    OAuthClient,
    RefreshToken,
    SigningKey,
    SigningKeyStatus,
    User,
)
from shared.auth.tokens import TokenSigner
from shared.messaging.unit_of_work import UnitOfWork


class UserRepository(Protocol):
    async def add(self, user: User) -> None:
        """Raises AlreadyExists if an account has this email."""

    async def get(self, user_id: uuid.UUID) -> User | None: ...

    async def get_by_email(self, email: str, *, for_update: bool = False) -> User | None:
        """``email`` normalised; ``for_update``: locked until the unit of work ends."""

    async def update_password_hash(self, user: User, *, expected_hash: str) -> bool:
        """Compare-and-set: writes only the hash, only if it is still ``expected_hash``."""

    async def update_role(self, user: User) -> None: ...


class SigningKeyRepository(Protocol):
    async def lock(self) -> None:
        """Serialises every change to the key set (and its publishing) until the unit of
        work ends, across instances."""

    async def all(self) -> list[SigningKey]:
        """Newest first."""

    async def add(self, key: SigningKey) -> bool:
        """False (and nothing changed) if a key with this kid exists already."""

    async def retire(self, kids: Sequence[str], at: datetime) -> None:
        """Only the keys not retired yet."""

    async def remove(self, kids: Sequence[str]) -> int: ...


class OAuthClientRepository(Protocol):
    async def get(self, client_id: str) -> OAuthClient | None: ...

    async def replace_all(self, clients: Sequence[OAuthClient]) -> None:
        """Upserts these; deletes every other client (and, by cascade, what it was given)."""


class AuthorizationCodeRepository(Protocol):
    async def add(self, code: AuthorizationCode) -> None: ...

    async def get(self, code_hash: str, *, for_update: bool = False) -> AuthorizationCode | None:
        """``for_update``: locked until the unit of work ends (one redemption at a time)."""

    async def mark_used(self, code_hash: str, at: datetime, family_id: uuid.UUID) -> None: ...


class RefreshTokenRepository(Protocol):
    async def add(self, token: RefreshToken) -> None: ...

    async def get(self, token_hash: str, *, for_update: bool = False) -> RefreshToken | None: ...

    async def find_by_access_jti(self, jti: str) -> RefreshToken | None: ...

    async def mark_used(self, token_hash: str, at: datetime) -> None: ...

    async def revoke_family(self, family_id: uuid.UUID, at: datetime) -> int:
        """Revokes every token of the family not revoked yet; returns how many."""


class LoginSessionRepository(Protocol):
    async def add(
        self, session_hash: str, user_id: uuid.UUID, auth_time: datetime, expires_at: datetime
    ) -> None: ...

    async def get(self, session_hash: str, now: datetime) -> tuple[User, datetime] | None:
        """The signed-in person and when they signed in, while the session lasts."""

    async def remove(self, session_hash: str) -> None: ...


class LoginAttemptRepository(Protocol):
    async def record_failure(self, email: str, ip: str, at: datetime) -> None: ...

    async def failures(self, *, email: str, ip: str, since: datetime) -> tuple[int, int]:
        """Failed sign-ins since then: (for this email, from this IP)."""


class UserUnitOfWork(UnitOfWork, Protocol):
    @property
    def users(self) -> UserRepository: ...

    @property
    def signing_keys(self) -> SigningKeyRepository: ...

    @property
    def oauth_clients(self) -> OAuthClientRepository: ...

    @property
    def oauth_codes(self) -> AuthorizationCodeRepository: ...

    @property
    def refresh_tokens(self) -> RefreshTokenRepository: ...

    @property
    def login_sessions(self) -> LoginSessionRepository: ...

    @property
    def login_attempts(self) -> LoginAttemptRepository: ...


UnitOfWorkFactory = Callable[[], UserUnitOfWork]


class SigningKeys(TokenSigner, Protocol):
    """The token signing keys (adapters/keyring.py): signs with the newest, rotates."""

    async def rotate(self) -> list[SigningKeyStatus]: ...

    async def statuses(self) -> list[SigningKeyStatus]: ...

    def sign(self, claims: Mapping[str, Any]) -> str:
        """Any claims (an OpenID Connect ID token) as an RS256 JWT by the signing key."""
