"""Which database failures a caller may retry: outages and lost races, found through the
chain of causes; anything else stays a defect (INTERNAL)."""

from __future__ import annotations

import asyncpg

from shared.db.errors import as_domain_error
from shared.errors import Conflict, Unavailable


def raised_while_handling(cause: BaseException, error: BaseException) -> BaseException:
    try:
        try:
            raise cause
        except BaseException:
            raise error  # noqa: B904 (the implicit context is the point)
    except BaseException as caught:
        return caught


def test_an_outage_is_unavailable() -> None:
    assert isinstance(as_domain_error(ConnectionRefusedError(111, "refused")), Unavailable)
    assert isinstance(as_domain_error(asyncpg.AdminShutdownError("bye")), Unavailable)


def test_a_lost_race_is_a_conflict() -> None:
    assert isinstance(as_domain_error(asyncpg.DeadlockDetectedError("deadlock")), Conflict)


def test_an_error_about_a_connection_lost_earlier_is_the_outage() -> None:
    # A rollback on a connection the server dropped: the outage is what the caller sees.
    error = raised_while_handling(
        asyncpg.ConnectionDoesNotExistError("closed mid-operation"),
        asyncpg.InterfaceError("cannot call Transaction.rollback(): the connection is closed"),
    )
    assert isinstance(as_domain_error(error), Unavailable)


def test_a_defect_stays_a_defect() -> None:
    assert as_domain_error(asyncpg.InterfaceError("the server expects 2 arguments")) is None
    assert as_domain_error(ValueError("bug")) is None
    assert as_domain_error(raised_while_handling(ValueError("a"), KeyError("b"))) is None
