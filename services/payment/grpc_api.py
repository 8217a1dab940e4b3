"""PaymentService over gRPC: proto to use case and back, and who may call what. Nothing else."""

from __future__ import annotations

import grpc

from services.payment import use_cases
from services.payment.domain import Wallet
from services.payment.use_cases import UnitOfWorkFactory
from shared.auth.identity import current_identity
from shared.auth.scopes import WALLET_READ, WALLET_WRITE
from shared.errors import InvalidArgument
from shared.proto_convert import money_from_proto, money_to_proto, timestamp
from shared.rpc.interceptors.auth import AccessPolicy
from shop.payment.v1 import payment_pb2, payment_pb2_grpc

_SERVICE = "/shop.payment.v1.PaymentService/"
# Every RPC acts on the caller's own wallet, so any valid token with the scope will do.
ACCESS = AccessPolicy(
    {},
    scopes={
        _SERVICE + "TopUp": WALLET_WRITE,
        _SERVICE + "GetBalance": WALLET_READ,
    },
)


def wallet_to_proto(w: Wallet) -> payment_pb2.Wallet:
    wallet = payment_pb2.Wallet(user_id=str(w.user_id), balance=money_to_proto(w.balance))
    if w.updated_at is not None:
        wallet.updated_at.CopyFrom(timestamp(w.updated_at))
    return wallet


class PaymentServicer(payment_pb2_grpc.PaymentServiceServicer):
    def __init__(self, units: UnitOfWorkFactory, currency: str) -> None:
        self._units = units
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
        wallet = await use_cases.top_up(
            self._units,
            user_id=current_identity().user_id,
            amount=money_from_proto(request.amount, "amount"),
            idempotency_key=request.idempotency_key,
            currency=self._currency,
        )
        return payment_pb2.TopUpResponse(wallet=wallet_to_proto(wallet))

    async def GetBalance(
        self, request: payment_pb2.GetBalanceRequest, context: grpc.aio.ServicerContext
    ) -> payment_pb2.GetBalanceResponse:
        """A caller without a wallet sees a zero balance; reading never creates one."""
        wallet = await use_cases.wallet_of(self._units, current_identity().user_id, self._currency)
        return payment_pb2.GetBalanceResponse(wallet=wallet_to_proto(wallet))
