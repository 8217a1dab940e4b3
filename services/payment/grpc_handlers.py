"""PaymentService over gRPC: validate, call the domain, map back. Nothing else."""

from __future__ import annotations

from collections.abc import Callable

import asyncpg
import grpc

from services.payment.domain import (
    LedgerEntry,
    Wallet,
    credit_refusal,
    new_top_up,
    reject_reused_key,
    require_wallet_currency,
)
from services.payment.persistence import PaymentUnitOfWork
from shared.auth.identity import current_identity
from shared.errors import InvalidArgument
from shared.proto_convert import money_from_proto, money_to_proto, timestamp
from shared.rpc.interceptors.auth import AccessPolicy
from shop.payment.v1 import payment_pb2, payment_pb2_grpc

# Every RPC acts on the caller's own wallet, so any valid token will do.
ACCESS = AccessPolicy({})


def wallet_to_proto(w: Wallet) -> payment_pb2.Wallet:
    wallet = payment_pb2.Wallet(user_id=str(w.user_id), balance=money_to_proto(w.balance))
    if w.updated_at is not None:
        wallet.updated_at.CopyFrom(timestamp(w.updated_at))
    return wallet


async def _apply_top_up(uow: PaymentUnitOfWork, entry: LedgerEntry, currency: str) -> Wallet:
    """Books the entry and credits the wallet once, or returns the wallet of the first attempt."""
    await uow.wallets.open(entry.user_id, currency)
    if await uow.ledger.add_once(entry):
        credited = await uow.wallets.credit(entry.user_id, entry.amount)
        if credited is not None:
            return credited
        wallet = await uow.wallets.get(entry.user_id)
        assert wallet is not None  # opened above, in this transaction
        raise credit_refusal(wallet, entry.amount)
    assert entry.idempotency_key is not None
    recorded = await uow.ledger.find_by_key(entry.user_id, entry.kind, entry.idempotency_key)
    assert recorded is not None  # the conflict that skipped the insert is this row
    reject_reused_key(recorded, entry)
    wallet = await uow.wallets.get(entry.user_id)
    assert wallet is not None  # a ledger entry's wallet exists (foreign key)
    return wallet


class PaymentServicer(payment_pb2_grpc.PaymentServiceServicer):
    def __init__(self, unit_of_work: Callable[[], PaymentUnitOfWork], currency: str) -> None:
        self._uow = unit_of_work
        self._currency = currency

    async def TopUp(
        self, request: payment_pb2.TopUpRequest, context: grpc.aio.ServicerContext
    ) -> payment_pb2.TopUpResponse:
        """Credits the caller's wallet once per idempotency_key.

        A retry with the same key and the same amount returns the wallet as it
        is now, crediting nothing. The same key with a different amount or
        currency is FAILED_PRECONDITION (the key already names another
        request); nothing is written.
        """
        if not request.HasField("amount"):
            raise InvalidArgument("amount", "is required")
        amount = require_wallet_currency(
            money_from_proto(request.amount, "amount"), self._currency, "amount.currency"
        )
        entry = new_top_up(
            user_id=current_identity().user_id,
            amount=amount,
            idempotency_key=request.idempotency_key,
        )
        async with self._uow() as uow:
            wallet = await _apply_top_up(uow, entry, self._currency)
        return payment_pb2.TopUpResponse(wallet=wallet_to_proto(wallet))

    async def GetBalance(
        self, request: payment_pb2.GetBalanceRequest, context: grpc.aio.ServicerContext
    ) -> payment_pb2.GetBalanceResponse:
        """A caller without a wallet sees a zero balance; reading never creates one."""
        user_id = current_identity().user_id
        async with self._uow() as uow:
            wallet = await uow.wallets.get(user_id)
        return payment_pb2.GetBalanceResponse(
            wallet=wallet_to_proto(wallet or Wallet.empty(user_id, self._currency))
        )


def unit_of_work_factory(pool: asyncpg.Pool) -> Callable[[], PaymentUnitOfWork]:
    return lambda: PaymentUnitOfWork(pool)
