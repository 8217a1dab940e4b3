"""A unit of work: one connection, one transaction, committed only on success.

Each service subclasses it to hang its repositories on the connection, so a use
case writes everything it changes, and the events that announce it, in one
transaction or not at all. A use case ``record``s the domain events its domain
decided on; the service's publishing map turns each into a message and a key,
and the outbox stores them with the transaction's other writes.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any, NamedTuple, Protocol, Self, TypeVar

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from google.protobuf.message import Message

from shared.db.errors import OUTAGE_MESSAGE
from shared.errors import Unavailable
from shared.messaging.envelope import topic_of
from shared.messaging.outbox import Outbox


class Publication(NamedTuple):
    """A domain event as the rest of the system sees it: an event message (its proto
    file names the topic) and the record key (the aggregate's id)."""

    message: Message
    key: str


# A service's publishing map: domain event -> Publication.
Publishing = Callable[[Any], Publication]


class UnitOfWork(Protocol):
    """What a use case sees of a unit of work: a block whose changes are kept together
    when it ends without an exception, or none of them. Each service's unit-of-work
    Protocol adds its repositories (and, if it publishes, a typed ``record``)."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


# What a connection's state raises once an outage cut it (checked by discard_if_broken).
CONNECTION_STATE_ERRORS = (asyncpg.InterfaceError, asyncpg.InternalClientError)


class PostgresUnitOfWork:
    """``read_only``: the repositories on a connection with no transaction around them,
    for a handler that reads with one statement (which is its own transaction): it
    saves the BEGIN and COMMIT round trips. Staging an event there is a bug (there is
    no commit to publish it with), so its outbox refuses."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        read_only: bool = False,
        publishing: Publishing | None = None,
    ) -> None:
        self._pool = pool
        self._read_only = read_only
        self._publishing = publishing
        self._conn: PoolConnectionProxy | None = None
        self._transaction: asyncpg.transaction.Transaction | None = None
        self._outbox: Outbox | None = None

    @property
    def connection(self) -> PoolConnectionProxy:
        if self._conn is None:
            raise RuntimeError("unit of work used outside 'async with'")
        return self._conn

    def bind(self, connection: PoolConnectionProxy) -> None:
        """Hook for subclasses: build repositories on the connection."""

    @property
    def outbox(self) -> Outbox:
        """Events staged here are written just before commit, and published only after it."""
        if self._outbox is None:
            raise RuntimeError(
                "a read-only unit of work stages no events"
                if self._read_only
                else "unit of work used outside 'async with'"
            )
        return self._outbox

    def record(self, *events: object) -> None:
        """Stages domain events: published if, and only if, this transaction commits."""
        if self._publishing is None:
            raise RuntimeError("this unit of work has no publishing map")
        for event in events:
            message, key = self._publishing(event)
            topic = topic_of(type(message))
            if topic is None:
                raise TypeError(f"{type(message).__name__} is not an event message")
            self.outbox.add(topic, message, key)

    async def __aenter__(self) -> Self:
        if self._read_only:
            self._conn = await self._pool.acquire()
            self.bind(self._conn)
            return self
        conn = await self._pool.acquire()
        try:
            transaction = conn.transaction()
            await transaction.start()
        except BaseException as error:
            # __aexit__ never runs when entering fails (a cancelled task, say):
            # without this the connection would never go back and pool.close() would hang.
            broken = discard_if_broken(conn, error)
            await self._pool.release(conn)
            if broken:
                raise Unavailable(OUTAGE_MESSAGE) from error
            raise
        self._conn, self._transaction = conn, transaction
        self._outbox = Outbox(conn)
        self.bind(conn)
        return self

    async def _rollback(self) -> None:
        assert self._transaction is not None and self._conn is not None
        try:
            await self._transaction.rollback()
        except CONNECTION_STATE_ERRORS as error:
            # A connection the server dropped has no transaction left to roll back; the
            # error that brought us here is the one to report.
            if not discard_if_broken(self._conn, error):
                raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # A statement that met a connection PostgreSQL's restart cut (closed, or left
        # mid-operation: asyncpg's InternalClientError) is an outage, as BEGIN's is.
        if self._read_only:
            assert self._conn is not None
            conn, self._conn = self._conn, None
            broken = exc is not None and discard_if_broken(conn, exc)
            await self._pool.release(conn)
            if broken:
                raise Unavailable(OUTAGE_MESSAGE) from exc
            return
        assert self._transaction is not None and self._conn is not None
        try:
            if exc_type is None:
                try:
                    await self.outbox.flush()
                except BaseException:
                    await self._rollback()
                    raise
                try:
                    await self._transaction.commit()
                except CONNECTION_STATE_ERRORS as error:
                    if not discard_if_broken(self._conn, error):
                        raise
                    # Whether the commit landed is unknown; the caller retries (with
                    # its idempotency key where the call has one).
                    raise Unavailable(OUTAGE_MESSAGE) from error
            else:
                await self._rollback()
                if exc is not None and discard_if_broken(self._conn, exc):
                    raise Unavailable(OUTAGE_MESSAGE) from exc
        finally:
            await self._pool.release(self._conn)
            self._conn = None
            self._transaction = None
            self._outbox = None
        if exc_type is None:
            self.committed()

    def committed(self) -> None:
        """Hook for subclasses: runs once the transaction committed (what only a done
        change may count, such as metrics)."""


def discard_if_broken(conn: PoolConnectionProxy, error: BaseException) -> bool:
    """Whether ``error`` says the connection was lost with the server (closed, or left
    mid-operation by the loss); if so it is terminated, so the pool never hands it out
    again."""
    # InternalClientError is no InterfaceError: asyncpg raises it for a connection whose
    # protocol is still in the middle of an operation the outage cut.
    left_mid_operation = isinstance(error, asyncpg.InternalClientError)
    if left_mid_operation or (isinstance(error, asyncpg.InterfaceError) and conn.is_closed()):
        conn.terminate()
        return True
    return False


UowT_co = TypeVar("UowT_co", bound=PostgresUnitOfWork, covariant=True)


class UnitOfWorkFactory(Protocol[UowT_co]):
    """A service's units of work: transactional, or ``read_only`` for a one-statement read."""

    def __call__(self, *, read_only: bool = False) -> UowT_co: ...
