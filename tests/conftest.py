"""Fixtures shared by the integration and e2e tests.

The ``stack`` fixture brings up the test profile of the local stack (real
PostgreSQL, etcd and Kafka on their own ports and data dir, so a `make run`
stack is never touched) and stops it at the end if this session started it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.stack import COMPONENTS, Stack
from tests.support.tokens import TestKeys, make_keys
from tests.support.tracing import RecentSpans, trace_the_test_process

# Before any server or channel is built: they take their interceptors when created.
RECENT_SPANS = trace_the_test_process()


@pytest.fixture(scope="session")
def recent_spans() -> RecentSpans:
    """Spans the test process recorded (its in-process instances, clients, consumers)."""
    return RECENT_SPANS


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    test_stack = Stack(os.environ.get("SHOP_TEST_PROFILE", "test"))
    was_up = all(test_stack.is_up(c) for c in COMPONENTS)
    test_stack.up()
    yield test_stack
    if not was_up and not os.environ.get("SHOP_TEST_KEEP_STACK"):
        test_stack.down()


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> TestKeys:
    return make_keys(Path(tmp_path_factory.mktemp("jwt")))
