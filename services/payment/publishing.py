"""What payment's domain events look like on the wire: shop.payments.v1, keyed by order id.

Every event of one order shares its key, so they land on one partition and the
order service reads them in the order they were recorded.
"""

from __future__ import annotations

from typing import assert_never

from google.protobuf.message import Message

from services.payment.domain import ChargeRefunded, ChargeRefused, OrderCharged, PaymentEvent
from shared.messaging.unit_of_work import Publication
from shared.proto_convert import money_to_proto
from shop.events.v1 import payment_events_pb2


def publication(event: PaymentEvent) -> Publication:
    key = str(event.order_id)
    message: Message
    match event:
        case OrderCharged():
            message = payment_events_pb2.PaymentSucceeded(
                order_id=key, charge_id=str(event.charge_id), amount=money_to_proto(event.amount)
            )
        case ChargeRefused():
            message = payment_events_pb2.PaymentFailed(order_id=key, reason=event.reason)
        case ChargeRefunded():
            message = payment_events_pb2.PaymentRefunded(
                order_id=key, amount=money_to_proto(event.amount)
            )
        case _:
            assert_never(event)
    return Publication(message, key)
