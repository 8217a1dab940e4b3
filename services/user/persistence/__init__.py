"""The user service's repositories and its unit of work over asyncpg: the accounts and
signing keys (accounts.py), the OAuth2 authorization server's tables (oauth.py)."""

from __future__ import annotations

from collections.abc import Callable

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from services.user.persistence.accounts import (
    PostgresSigningKeyRepository,
    PostgresUserRepository,
)
from services.user.persistence.oauth import (
    PostgresAuthorizationCodeRepository,
    PostgresLoginAttemptRepository,
    PostgresLoginSessionRepository,
    PostgresOAuthClientRepository,
    PostgresRefreshTokenRepository,
    purge_expired,
)
from shared.messaging.unit_of_work import PostgresUnitOfWork

__all__ = ["PostgresUserUnitOfWork", "purge_expired", "unit_of_work_factory"]


class PostgresUserUnitOfWork(PostgresUnitOfWork):
    users: PostgresUserRepository
    signing_keys: PostgresSigningKeyRepository
    oauth_clients: PostgresOAuthClientRepository
    oauth_codes: PostgresAuthorizationCodeRepository
    refresh_tokens: PostgresRefreshTokenRepository
    login_sessions: PostgresLoginSessionRepository
    login_attempts: PostgresLoginAttemptRepository

    def bind(self, connection: PoolConnectionProxy) -> None:
        self.users = PostgresUserRepository(connection)
        self.signing_keys = PostgresSigningKeyRepository(connection)
        self.oauth_clients = PostgresOAuthClientRepository(connection)
        self.oauth_codes = PostgresAuthorizationCodeRepository(connection)
        self.refresh_tokens = PostgresRefreshTokenRepository(connection)
        self.login_sessions = PostgresLoginSessionRepository(connection)
        self.login_attempts = PostgresLoginAttemptRepository(connection)


def unit_of_work_factory(pool: asyncpg.Pool) -> Callable[[], PostgresUserUnitOfWork]:
    return lambda: PostgresUserUnitOfWork(pool)
