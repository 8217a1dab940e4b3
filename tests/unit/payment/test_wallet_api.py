"""The wallet use cases behind TopUp and GetBalance, with no database: a key credits once."""

from __future__ import annotations

import uuid

import pytest

from services.payment import use_cases
from services.payment.domain import MAX_BALANCE_MINOR, EntryKind, Wallet
from shared.errors import FailedPrecondition, InvalidArgument
from shared.money import MAX_AMOUNT_MINOR, Money
from tests.unit.payment.fakes import FakePaymentUnitOfWork, books_disagree


async def top_up(uow: FakePaymentUnitOfWork, user: uuid.UUID, amount: Money, key: str) -> Wallet:
    return await use_cases.top_up(
        uow, user_id=user, amount=amount, idempotency_key=key, currency="USD"
    )


def usd(amount: int) -> Money:
    return Money(amount, "USD")


def entries_of(uow: FakePaymentUnitOfWork, user: uuid.UUID) -> int:
    return sum(e.user_id == user for e in uow.ledger.rows.values())


def rows(uow: FakePaymentUnitOfWork) -> tuple[object, ...]:
    return (dict(uow.wallets.rows), dict(uow.ledger.rows), dict(uow.payments.rows))


async def test_the_first_top_up_opens_the_wallet(uow: FakePaymentUnitOfWork) -> None:
    user = uuid.uuid4()
    wallet = await top_up(uow, user, usd(500), "first")
    assert (wallet.user_id, wallet.balance) == (user, usd(500))
    assert wallet.updated_at is not None
    assert uow.wallets.rows[user] == wallet
    [entry] = uow.ledger.rows.values()
    assert (entry.kind, entry.amount, entry.idempotency_key) == (EntryKind.TOPUP, usd(500), "first")
    assert uow.published == []  # top-ups announce nothing
    assert books_disagree(uow) == []


async def test_a_top_up_credits_once_per_key(uow: FakePaymentUnitOfWork) -> None:
    user = uuid.uuid4()
    first = await top_up(uow, user, usd(250), "k1")
    repeat = await top_up(uow, user, usd(250), "k1")
    assert first.balance == repeat.balance == usd(250)
    assert entries_of(uow, user) == 1

    assert (await top_up(uow, user, usd(50), "k2")).balance == usd(300)
    # A retry of the first request, after another one, still credits nothing.
    assert (await top_up(uow, user, usd(250), "k1")).balance == usd(300)
    assert uow.wallets.balance(user) == 300
    assert entries_of(uow, user) == 2
    assert books_disagree(uow) == []


async def test_keys_are_per_user(uow: FakePaymentUnitOfWork) -> None:
    alice, bob = uuid.uuid4(), uuid.uuid4()
    assert (await top_up(uow, alice, usd(10), "same")).balance == usd(10)
    assert (await top_up(uow, bob, usd(20), "same")).balance == usd(20)
    assert (uow.wallets.balance(alice), uow.wallets.balance(bob)) == (10, 20)


@pytest.mark.parametrize("amount", [usd(101), usd(99)])
async def test_a_key_reused_for_another_amount_is_refused_and_writes_nothing(
    uow: FakePaymentUnitOfWork, amount: Money
) -> None:
    user = uuid.uuid4()
    await top_up(uow, user, usd(100), "used")
    before = rows(uow)
    with pytest.raises(FailedPrecondition, match="already used"):
        await top_up(uow, user, amount, "used")
    assert rows(uow) == before


async def test_another_currency_is_refused_before_anything_is_opened(
    uow: FakePaymentUnitOfWork,
) -> None:
    user = uuid.uuid4()
    with pytest.raises(InvalidArgument) as error:
        await top_up(uow, user, Money(5, "EUR"), "eur")
    assert error.value.field == "amount.currency"
    assert rows(uow) == ({}, {}, {})
    assert (uow.commits, uow.rollbacks) == (0, 0)  # refused before any transaction


async def test_the_balance_ceiling_refuses_and_writes_nothing(uow: FakePaymentUnitOfWork) -> None:
    user = uuid.uuid4()
    for i in range(MAX_BALANCE_MINOR // MAX_AMOUNT_MINOR):
        await top_up(uow, user, usd(MAX_AMOUNT_MINOR), f"fill-{i}")
    assert uow.wallets.balance(user) == MAX_BALANCE_MINOR
    before = rows(uow)
    with pytest.raises(FailedPrecondition, match=str(MAX_BALANCE_MINOR)):
        await top_up(uow, user, usd(1), "one-more")
    assert rows(uow) == before
    assert books_disagree(uow) == []


async def test_a_user_without_a_wallet_reads_an_empty_one_and_opens_none(
    uow: FakePaymentUnitOfWork,
) -> None:
    user = uuid.uuid4()
    wallet = await use_cases.wallet_of(uow, user, "USD")
    assert (wallet.user_id, wallet.balance, wallet.updated_at) == (user, usd(0), None)
    assert rows(uow) == ({}, {}, {})


async def test_a_user_reads_their_own_wallet(uow: FakePaymentUnitOfWork) -> None:
    user, other = uuid.uuid4(), uuid.uuid4()
    await top_up(uow, user, usd(700), "k")
    await top_up(uow, other, usd(5), "k")
    assert await use_cases.wallet_of(uow, user, "USD") == uow.wallets.rows[user]
    assert (await use_cases.wallet_of(uow, user, "USD")).balance == usd(700)
