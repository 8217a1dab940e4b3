"""Payment's rules without I/O: top-up validation, idempotency keys, refusals."""

from __future__ import annotations

import uuid

import pytest

from services.payment.domain import (
    MAX_BALANCE_MINOR,
    EntryKind,
    Wallet,
    credit_refusal,
    new_top_up,
    reject_reused_key,
    require_wallet_currency,
)
from shared.errors import FailedPrecondition, InvalidArgument
from shared.money import MAX_AMOUNT_MINOR, Money

USER = uuid.uuid4()


def test_top_up_entry() -> None:
    entry = new_top_up(user_id=USER, amount=Money(500, "USD"), idempotency_key="k-1")
    assert entry.kind is EntryKind.TOPUP
    assert entry.user_id == USER
    assert entry.amount == Money(500, "USD")
    assert entry.idempotency_key == "k-1"
    assert entry.order_id is None


@pytest.mark.parametrize("amount", [0, -1, MAX_AMOUNT_MINOR + 1])
def test_top_up_amount_out_of_range(amount: int) -> None:
    with pytest.raises(InvalidArgument) as error:
        new_top_up(user_id=USER, amount=Money(amount, "USD"), idempotency_key="k")
    assert error.value.field == "amount.amount_minor"


def test_top_up_key_follows_the_shared_rule() -> None:
    with pytest.raises(InvalidArgument) as error:
        new_top_up(user_id=USER, amount=Money(1, "USD"), idempotency_key="a\x00b")
    assert error.value.field == "idempotency_key"


def test_wallet_currency_must_match() -> None:
    assert require_wallet_currency(Money(1, "USD"), "USD", "amount.currency") == Money(1, "USD")
    with pytest.raises(InvalidArgument) as error:
        require_wallet_currency(Money(1, "EUR"), "USD", "amount.currency")
    assert error.value.field == "amount.currency"


def test_retry_with_same_amount_is_accepted() -> None:
    first = new_top_up(user_id=USER, amount=Money(100, "USD"), idempotency_key="k")
    retry = new_top_up(user_id=USER, amount=Money(100, "USD"), idempotency_key="k")
    reject_reused_key(first, retry)  # no error: it is the same request


@pytest.mark.parametrize("amount", [Money(101, "USD"), Money(100, "EUR")])
def test_reusing_a_key_for_another_request_is_refused(amount: Money) -> None:
    first = new_top_up(user_id=USER, amount=Money(100, "USD"), idempotency_key="k")
    other = new_top_up(user_id=USER, amount=amount, idempotency_key="k")
    with pytest.raises(FailedPrecondition):
        reject_reused_key(first, other)


def test_empty_wallet() -> None:
    wallet = Wallet.empty(USER, "USD")
    assert wallet.balance == Money(0, "USD")
    assert wallet.updated_at is None


def test_credit_refusal_names_the_reason() -> None:
    wallet = Wallet(USER, Money(MAX_BALANCE_MINOR, "USD"), None)
    assert "EUR" in credit_refusal(wallet, Money(1, "EUR")).message
    assert str(MAX_BALANCE_MINOR) in credit_refusal(wallet, Money(1, "USD")).message
