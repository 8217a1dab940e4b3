"""The Kafka topics of the saga. Every event of one order is keyed by its order id,
so all of them land on one partition of their topic and stay in order."""

from typing import Final

ORDERS: Final = "shop.orders.v1"
INVENTORY: Final = "shop.inventory.v1"
PAYMENTS: Final = "shop.payments.v1"
DEADLETTER: Final = "shop.deadletter.v1"

# name -> partitions: several, so consumer instances can share a topic.
TOPICS: Final[dict[str, int]] = {ORDERS: 6, INVENTORY: 6, PAYMENTS: 6, DEADLETTER: 3}
