"""A unit of work reports a connection left broken by an outage as Unavailable, and
never hands that connection back to the pool usable."""

from __future__ import annotations

from typing import Any, cast

import asyncpg
import pytest

from shared.db.errors import OUTAGE_MESSAGE
from shared.errors import Unavailable
from shared.messaging.unit_of_work import PostgresUnitOfWork


class FakeConnection:
    def __init__(self) -> None:
        self.terminated = False

    def is_closed(self) -> bool:
        return self.terminated

    def terminate(self) -> None:
        self.terminated = True


class FakePool:
    def __init__(self) -> None:
        self.connection = FakeConnection()
        self.released: list[FakeConnection] = []

    async def acquire(self) -> FakeConnection:
        return self.connection

    async def release(self, connection: FakeConnection) -> None:
        self.released.append(connection)


def read_only(pool: FakePool) -> PostgresUnitOfWork:
    return PostgresUnitOfWork(cast(Any, pool), read_only=True)


async def test_a_connection_left_mid_operation_is_an_outage_and_is_terminated() -> None:
    pool = FakePool()
    with pytest.raises(Unavailable, match=OUTAGE_MESSAGE) as caught:
        async with read_only(pool):
            raise asyncpg.InternalClientError(
                "cannot switch to state 12; another operation (2) is in progress"
            )
    assert isinstance(caught.value.__cause__, asyncpg.InternalClientError)
    assert pool.connection.terminated
    assert pool.released == [pool.connection]  # released, so the pool replaces it


async def test_other_errors_pass_through_and_keep_the_connection() -> None:
    pool = FakePool()
    with pytest.raises(asyncpg.UniqueViolationError):
        async with read_only(pool):
            raise asyncpg.UniqueViolationError("duplicate key")
    with pytest.raises(LookupError):
        async with read_only(pool):
            raise LookupError("a handler's own error")
    assert not pool.connection.terminated
    assert pool.released == [pool.connection, pool.connection]


class FakeTransaction:
    def __init__(self, connection: FakeConnection) -> None:
        self.connection = connection
        self.rolled_back = 0

    async def start(self) -> None:
        return None

    async def rollback(self) -> None:
        self.rolled_back += 1
        # The protocol is still mid-operation: the rollback cannot be sent either.
        raise asyncpg.InternalClientError("cannot switch to state 12")


class TransactionalConnection(FakeConnection):
    def __init__(self) -> None:
        super().__init__()
        self.transactions: list[FakeTransaction] = []

    def transaction(self) -> FakeTransaction:
        self.transactions.append(FakeTransaction(self))
        return self.transactions[-1]


async def test_a_transaction_whose_statement_met_a_cut_connection_is_an_outage() -> None:
    pool = FakePool()
    pool.connection = TransactionalConnection()
    with pytest.raises(Unavailable, match=OUTAGE_MESSAGE):
        async with PostgresUnitOfWork(cast(Any, pool)):
            raise asyncpg.InternalClientError("another operation (2) is in progress")
    assert pool.connection.transactions[0].rolled_back == 1
    assert pool.connection.terminated
    assert pool.released == [pool.connection]
