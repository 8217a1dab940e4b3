from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from tests.unit.gateway.fakes import FakeGateway, Keys, fake_gateway


@pytest.fixture(scope="session")
def keys() -> Keys:
    return Keys()


@pytest_asyncio.fixture
async def gw(keys: Keys) -> AsyncIterator[FakeGateway]:
    fake = fake_gateway(keys)
    async with fake.client:
        yield fake
