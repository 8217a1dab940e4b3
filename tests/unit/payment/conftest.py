"""The fake unit of work each of payment's unit tests starts with, empty."""

from __future__ import annotations

import pytest

from tests.unit.payment.fakes import FakePaymentUnitOfWork


@pytest.fixture
def uow() -> FakePaymentUnitOfWork:
    return FakePaymentUnitOfWork()
