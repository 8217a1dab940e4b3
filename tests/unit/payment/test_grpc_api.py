"""PaymentService's servicer on the fake unit of work: the caller's identity picks the
wallet, and the proto says what the use cases returned."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any, cast

import grpc
import pytest

from services.payment.grpc_api import PaymentServicer
from shared.auth.identity import Identity, Role, set_current_identity
from shared.errors import InvalidArgument
from shop.common.v1 import money_pb2
from shop.payment.v1 import payment_pb2 as pb
from tests.unit.payment.fakes import FakePaymentUnitOfWork

CALLER = uuid.uuid4()
# The servicer never reads the context: identity and deadlines come from the interceptors.
CONTEXT = cast(grpc.aio.ServicerContext[Any, Any], None)


@pytest.fixture(autouse=True)
def caller() -> Iterator[None]:
    set_current_identity(Identity(CALLER, Role.CUSTOMER))
    yield
    set_current_identity(None)


def usd(amount: int) -> money_pb2.Money:
    return money_pb2.Money(amount_minor=amount, currency="USD")


async def test_top_up_credits_the_callers_wallet(uow: FakePaymentUnitOfWork) -> None:
    servicer = PaymentServicer(uow, "USD")
    request = pb.TopUpRequest(amount=usd(500), idempotency_key="k")
    wallet = (await servicer.TopUp(request, CONTEXT)).wallet
    assert wallet.user_id == str(CALLER)
    assert (wallet.balance.amount_minor, wallet.balance.currency) == (500, "USD")
    assert wallet.HasField("updated_at")
    assert uow.wallets.balance(CALLER) == 500


async def test_top_up_without_an_amount_is_refused(uow: FakePaymentUnitOfWork) -> None:
    with pytest.raises(InvalidArgument) as error:
        await PaymentServicer(uow, "USD").TopUp(pb.TopUpRequest(idempotency_key="k"), CONTEXT)
    assert error.value.field == "amount"
    assert uow.wallets.rows == {}


async def test_a_caller_without_a_wallet_sees_zero_and_no_update_time(
    uow: FakePaymentUnitOfWork,
) -> None:
    wallet = (await PaymentServicer(uow, "USD").GetBalance(pb.GetBalanceRequest(), CONTEXT)).wallet
    assert wallet.user_id == str(CALLER)
    assert (wallet.balance.amount_minor, wallet.balance.currency) == (0, "USD")
    assert not wallet.HasField("updated_at")
    assert uow.wallets.rows == {}
