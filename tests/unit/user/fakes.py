"""The user service's ports in memory, with the semantics of its SQL: the unique email,
the compare-and-set on a password hash, ``ON CONFLICT DO NOTHING`` for a signing key,
and etcd's JWKS key for the keyring."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from services.user.domain import SigningKey, SigningKeyStatus, User, newest_first
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


class FakeUserUnitOfWork(FakeUnitOfWork):
    """Its own factory: ``use_case(uow, ...)`` opens it as the service opens a new one."""

    REPOSITORIES = ("users", "signing_keys")

    def __init__(self) -> None:
        super().__init__()
        self.users = FakeUserRepository()
        self.signing_keys = FakeSigningKeyRepository()

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
