"""PaymentService against the real PostgreSQL and etcd: the wire API (tokens, status codes,
bad input that writes nothing) and top-ups under concurrency.

The top-up and balance rules themselves are proven without a database in
tests/unit/payment/test_wallet_api.py."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import asyncpg
import grpc
import pytest
import pytest_asyncio

from devstack.stack import Stack
from services.payment.domain import MAX_BALANCE_MINOR
from services.payment.main import SERVICE
from shared.auth.identity import Role
from shared.money import MAX_AMOUNT_MINOR
from shared.validation import MAX_IDEMPOTENCY_KEY
from shop.common.v1.money_pb2 import Money
from shop.payment.v1 import payment_pb2 as pb
from shop.payment.v1.payment_pb2_grpc import PaymentServiceStub
from tests.support.services import RunningService, recreate_database, run_service
from tests.support.tokens import TestKeys, bearer

if TYPE_CHECKING:
    # What PaymentServiceStub(aio channel) is; exists only for the type checker.
    from shop.payment.v1.payment_pb2_grpc import PaymentServiceAsyncStub

pytestmark = pytest.mark.integration

TABLES = ("wallets", "ledger_entries", "payments", "outbox", "processed_events")
# A customer with a wallet and one top-up under USED_KEY before every bad-input call.
KNOWN_USER = uuid.uuid4()
USED_KEY = "used-key"
USED_AMOUNT = 100


def usd(amount: int) -> Money:
    return Money(amount_minor=amount, currency="USD")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def service(stack: Stack, keys: TestKeys) -> AsyncIterator[RunningService]:
    await recreate_database(stack, "payment")
    # API only: a saga consumer here would also take other tests' events from the shared
    # topics and write payments and outbox rows in the middle of the row counts below.
    # The saga is tested in test_payment_saga.py.
    async with run_service(SERVICE, stack, keys, consume_events=False) as running:
        stub = PaymentServiceStub(running.channel)
        await stub.TopUp(
            pb.TopUpRequest(amount=usd(USED_AMOUNT), idempotency_key=USED_KEY),
            metadata=bearer(keys.token(Role.CUSTOMER, user_id=KNOWN_USER)),
        )
        yield running


@pytest.fixture
def stub(service: RunningService) -> PaymentServiceAsyncStub:
    return PaymentServiceStub(service.channel)


def customer(keys: TestKeys, user_id: uuid.UUID) -> tuple[tuple[str, str], ...]:
    return bearer(keys.token(Role.CUSTOMER, user_id=user_id))


async def fetch(service: RunningService, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(service.dsn)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def assert_ledger_matches_balances(service: RunningService) -> None:
    """The audit's invariant, from SQL: balance == topups + refunds - charges, never negative."""
    broken = await fetch(
        service,
        "SELECT w.user_id, w.balance_minor, coalesce(l.net, 0) AS net FROM wallets w"
        " LEFT JOIN (SELECT user_id, sum(CASE kind WHEN 'charge' THEN -amount_minor"
        "                                 ELSE amount_minor END) AS net"
        "            FROM ledger_entries GROUP BY user_id) l USING (user_id)"
        " WHERE w.balance_minor <> coalesce(l.net, 0) OR w.balance_minor < 0",
    )
    assert broken == [], [dict(r) for r in broken]


async def balance_in_db(service: RunningService, user_id: uuid.UUID) -> int | None:
    rows = await fetch(service, "SELECT balance_minor FROM wallets WHERE user_id = $1", user_id)
    return rows[0]["balance_minor"] if rows else None


async def entries_of(service: RunningService, user_id: uuid.UUID) -> int:
    rows = await fetch(
        service, "SELECT count(*) AS n FROM ledger_entries WHERE user_id = $1", user_id
    )
    return int(rows[0]["n"])


# --- happy paths --------------------------------------------------------------------------------


async def test_first_top_up_opens_the_wallet(stub, keys, service) -> None:
    user = uuid.uuid4()
    wallet = (
        await stub.TopUp(
            pb.TopUpRequest(amount=usd(500), idempotency_key="first"), metadata=customer(keys, user)
        )
    ).wallet
    assert wallet.user_id == str(user)
    assert (wallet.balance.amount_minor, wallet.balance.currency) == (500, "USD")
    assert wallet.HasField("updated_at")
    assert await balance_in_db(service, user) == 500
    assert await entries_of(service, user) == 1
    await assert_ledger_matches_balances(service)


async def test_get_balance_shows_the_callers_own_wallet(stub, keys) -> None:
    user = uuid.uuid4()
    await stub.TopUp(
        pb.TopUpRequest(amount=usd(MAX_AMOUNT_MINOR), idempotency_key="big"),
        metadata=customer(keys, user),
    )
    mine = (await stub.GetBalance(pb.GetBalanceRequest(), metadata=customer(keys, user))).wallet
    assert (mine.user_id, mine.balance.amount_minor) == (str(user), MAX_AMOUNT_MINOR)
    known = (
        await stub.GetBalance(pb.GetBalanceRequest(), metadata=customer(keys, KNOWN_USER))
    ).wallet
    assert (known.user_id, known.balance.amount_minor) == (str(KNOWN_USER), USED_AMOUNT)
    admin = (
        await stub.GetBalance(pb.GetBalanceRequest(), metadata=bearer(keys.token(Role.ADMIN)))
    ).wallet
    assert admin.balance.amount_minor == 0


async def test_balance_ceiling_refuses_and_writes_nothing(stub, keys, service) -> None:
    user = uuid.uuid4()
    auth = customer(keys, user)
    fills = MAX_BALANCE_MINOR // MAX_AMOUNT_MINOR
    await asyncio.gather(
        *(
            stub.TopUp(
                pb.TopUpRequest(amount=usd(MAX_AMOUNT_MINOR), idempotency_key=f"fill-{i}"),
                metadata=auth,
            )
            for i in range(fills)
        )
    )
    assert await balance_in_db(service, user) == MAX_BALANCE_MINOR
    before = {t: await service.count(t) for t in TABLES}
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.TopUp(pb.TopUpRequest(amount=usd(1), idempotency_key="one-more"), metadata=auth)
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert {t: await service.count(t) for t in TABLES} == before
    assert await balance_in_db(service, user) == MAX_BALANCE_MINOR
    await assert_ledger_matches_balances(service)


# --- concurrency --------------------------------------------------------------------------------


async def test_concurrent_top_ups_with_distinct_keys_all_count(stub, keys, service) -> None:
    user = uuid.uuid4()
    auth = customer(keys, user)
    await asyncio.gather(
        *(
            stub.TopUp(pb.TopUpRequest(amount=usd(i), idempotency_key=f"c-{i}"), metadata=auth)
            for i in range(1, 51)
        )
    )
    assert await balance_in_db(service, user) == sum(range(1, 51))
    assert await entries_of(service, user) == 50
    await assert_ledger_matches_balances(service)


async def test_concurrent_retries_of_one_key_credit_once(stub, keys, service) -> None:
    user = uuid.uuid4()  # no wallet yet: the racers also race to open it
    auth = customer(keys, user)
    responses = await asyncio.gather(
        *(
            stub.TopUp(pb.TopUpRequest(amount=usd(700), idempotency_key="retry"), metadata=auth)
            for _ in range(50)
        )
    )
    assert {r.wallet.balance.amount_minor for r in responses} == {700}
    assert await balance_in_db(service, user) == 700
    assert await entries_of(service, user) == 1
    await assert_ledger_matches_balances(service)


async def test_concurrent_mixed_keys_and_retries(stub, keys, service) -> None:
    user = uuid.uuid4()
    auth = customer(keys, user)
    # 25 distinct keys, each sent twice at once: exactly 25 credits.
    calls = [
        stub.TopUp(pb.TopUpRequest(amount=usd(1000 + i), idempotency_key=f"m-{i}"), metadata=auth)
        for i in range(25)
        for _ in range(2)
    ]
    await asyncio.gather(*calls)
    assert await balance_in_db(service, user) == sum(1000 + i for i in range(25))
    assert await entries_of(service, user) == 25
    await assert_ledger_matches_balances(service)


# --- bad input ----------------------------------------------------------------------------------

Call = Callable[["PaymentServiceAsyncStub", TestKeys], Awaitable[Any]]
Code = grpc.StatusCode
Auth = Callable[[TestKeys], tuple[tuple[str, str], ...]]


def _new_customer(k: TestKeys) -> tuple[tuple[str, str], ...]:
    return bearer(k.token(Role.CUSTOMER))


def _known_customer(k: TestKeys) -> tuple[tuple[str, str], ...]:
    return bearer(k.token(Role.CUSTOMER, user_id=KNOWN_USER))


def _no_token(k: TestKeys) -> tuple[tuple[str, str], ...]:
    return ()


def _expired(k: TestKeys) -> tuple[tuple[str, str], ...]:
    return bearer(k.expired_token(Role.CUSTOMER))


def _not_bearer(k: TestKeys) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Token {k.token(Role.CUSTOMER)}"),)


def _garbage(k: TestKeys) -> tuple[tuple[str, str], ...]:
    return bearer("not.a.jwt")


def _top_up(amount: Money | None, key: str = "fresh-key", auth: Auth = _new_customer) -> Call:
    def call(s: PaymentServiceAsyncStub, k: TestKeys) -> Awaitable[Any]:
        request = pb.TopUpRequest(idempotency_key=key)
        if amount is not None:
            request.amount.CopyFrom(amount)
        return s.TopUp(request, metadata=auth(k))

    return call


def _balance(auth: Auth) -> Call:
    return lambda s, k: s.GetBalance(pb.GetBalanceRequest(), metadata=auth(k))


BAD_INPUT: list[tuple[str, Call, grpc.StatusCode]] = [
    # TopUp (any valid token; acts on the caller's wallet, so there is no id to be unknown)
    ("topup-missing-amount", _top_up(None), Code.INVALID_ARGUMENT),
    ("topup-empty-amount", _top_up(Money()), Code.INVALID_ARGUMENT),
    ("topup-zero", _top_up(usd(0)), Code.INVALID_ARGUMENT),
    ("topup-negative", _top_up(usd(-1)), Code.INVALID_ARGUMENT),
    ("topup-int64-min", _top_up(usd(-(2**63))), Code.INVALID_ARGUMENT),
    ("topup-oversized", _top_up(usd(MAX_AMOUNT_MINOR + 1)), Code.INVALID_ARGUMENT),
    ("topup-int64-max", _top_up(usd(2**63 - 1)), Code.INVALID_ARGUMENT),
    ("topup-empty-currency", _top_up(Money(amount_minor=5)), Code.INVALID_ARGUMENT),
    (
        "topup-lowercase-currency",
        _top_up(Money(amount_minor=5, currency="usd")),
        Code.INVALID_ARGUMENT,
    ),
    ("topup-long-currency", _top_up(Money(amount_minor=5, currency="USDX")), Code.INVALID_ARGUMENT),
    ("topup-other-currency", _top_up(Money(amount_minor=5, currency="EUR")), Code.INVALID_ARGUMENT),
    (
        "topup-other-currency-known-wallet",
        _top_up(Money(amount_minor=5, currency="EUR"), "eur-key", _known_customer),
        Code.INVALID_ARGUMENT,
    ),
    ("topup-empty-key", _top_up(usd(5), ""), Code.INVALID_ARGUMENT),
    ("topup-blank-key", _top_up(usd(5), "   "), Code.INVALID_ARGUMENT),
    (
        "topup-oversized-key",
        _top_up(usd(5), "k" * (MAX_IDEMPOTENCY_KEY + 1)),
        Code.INVALID_ARGUMENT,
    ),
    ("topup-nul-in-key", _top_up(usd(5), "a\x00b"), Code.INVALID_ARGUMENT),
    ("topup-newline-in-key", _top_up(usd(5), "a\nb"), Code.INVALID_ARGUMENT),
    (
        "topup-key-reused-other-amount",
        _top_up(usd(USED_AMOUNT + 1), USED_KEY, _known_customer),
        Code.FAILED_PRECONDITION,
    ),
    ("topup-missing-token", _top_up(usd(5), auth=_no_token), Code.UNAUTHENTICATED),
    ("topup-expired-token", _top_up(usd(5), auth=_expired), Code.UNAUTHENTICATED),
    ("topup-not-bearer", _top_up(usd(5), auth=_not_bearer), Code.UNAUTHENTICATED),
    ("topup-garbage-token", _top_up(usd(5), auth=_garbage), Code.UNAUTHENTICATED),
    # GetBalance (no fields: only the token can be bad; no admin RPCs in this service)
    ("balance-missing-token", _balance(_no_token), Code.UNAUTHENTICATED),
    ("balance-expired-token", _balance(_expired), Code.UNAUTHENTICATED),
    ("balance-not-bearer", _balance(_not_bearer), Code.UNAUTHENTICATED),
    ("balance-garbage-token", _balance(_garbage), Code.UNAUTHENTICATED),
]


@pytest.mark.parametrize(
    ("call", "code"), [pytest.param(c, code, id=name) for name, c, code in BAD_INPUT]
)
async def test_bad_input_is_rejected_and_writes_nothing(
    service: RunningService,
    stub: PaymentServiceAsyncStub,
    keys: TestKeys,
    call: Call,
    code: grpc.StatusCode,
) -> None:
    before = {t: await service.count(t) for t in TABLES}
    known_balance = await balance_in_db(service, KNOWN_USER)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call(stub, keys)
    assert error.value.code() == code, error.value.details()
    assert {t: await service.count(t) for t in TABLES} == before
    assert await balance_in_db(service, KNOWN_USER) == known_balance == USED_AMOUNT
    await assert_ledger_matches_balances(service)
