"""Kafka clients of the tests: each acts as someone the broker knows (ops/trust/rights.py).

Tests that set up or watch topics act as the operator (a super user); a test that
plays a service acts as that service, with exactly its rights.
"""

from __future__ import annotations

from typing import Any

from devstack.stack import Stack
from shared.messaging.kafka import KafkaIdentity
from shared.tls import OPERATOR


def identity(stack: Stack, name: str = OPERATOR) -> KafkaIdentity:
    return KafkaIdentity(stack.tls_dir, name)


def options(stack: Stack, name: str = OPERATOR) -> dict[str, Any]:
    """bootstrap_servers and the TLS options of an aiokafka client acting as ``name``."""
    return {"bootstrap_servers": stack.kafka_bootstrap, **identity(stack, name).client_options()}
