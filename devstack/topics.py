"""The Kafka topics devstack creates: the saga's own list, plus how to replicate them."""

from typing import Final

from shared.messaging.topics import TOPICS

__all__ = ["REPLICATION_FACTOR", "TOPICS"]

# A single-broker stack cannot replicate.
REPLICATION_FACTOR: Final = 1
