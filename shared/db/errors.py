"""Which database failures are outages or lost races rather than bugs.

A caller should retry after these (UNAVAILABLE, ABORTED); any other database
error is a defect of ours and is reported as INTERNAL with an error id.
"""

from __future__ import annotations

import asyncpg

from shared.errors import Conflict, DomainError, Unavailable

_OUTAGES: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,  # includes a connection lost mid-query
    asyncpg.exceptions.OperatorInterventionError,  # shutting down, cannot connect now, timeout
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
    asyncpg.exceptions.ConnectionDoesNotExistError,
    ConnectionError,
    OSError,
    TimeoutError,  # pool acquire or command timeout
)
_LOST_RACES: tuple[type[BaseException], ...] = (asyncpg.exceptions.TransactionRollbackError,)


OUTAGE_MESSAGE = "a dependency of this service is unavailable; retry later"


def as_domain_error(error: BaseException) -> DomainError | None:
    """The retryable domain error an infrastructure failure stands for, or None.

    The chain of causes counts: a lost connection often surfaces as a later error
    about the connection's state (a rollback on a closed connection, say)."""
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, _LOST_RACES):
            return Conflict("the call lost a race with a concurrent one; retry it")
        if isinstance(cause, _OUTAGES):
            return Unavailable(OUTAGE_MESSAGE)
        cause = cause.__cause__ or cause.__context__
    return None
