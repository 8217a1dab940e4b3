from __future__ import annotations

import pytest

from tests.unit.inventory.fakes import FakeInventoryUnitOfWork


@pytest.fixture
def uow() -> FakeInventoryUnitOfWork:
    """A fresh, empty inventory: one per test."""
    return FakeInventoryUnitOfWork()
