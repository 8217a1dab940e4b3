"""The payment-provider simulator and its settings: repeatable answers, bounded rates."""

from __future__ import annotations

import time
import uuid

import pytest
from pydantic import ValidationError

from services.payment.adapters.provider import PaymentProviderSimulator
from services.payment.domain import DECLINED_BY_PROVIDER, ProviderDecision
from services.payment.settings import PaymentSettings
from shared.money import Money

ORDER = uuid.uuid4()
AMOUNT = Money(1500, "USD")

IDS = [uuid.UUID(int=i * 7919 + 1) for i in range(2000)]


def provider(
    rate: float, seed: int | None = None, latency_ms: float = 0
) -> PaymentProviderSimulator:
    return PaymentProviderSimulator(latency_ms=latency_ms, failure_rate=rate, seed=seed)


def test_draws_are_in_the_unit_interval_and_repeatable() -> None:
    sim = provider(0.3, seed=42)
    draws = [sim.draw(i) for i in IDS]
    assert all(0 <= d < 1 for d in draws)
    assert draws == [provider(0.9, seed=42).draw(i) for i in IDS]  # the rate does not move them
    assert len(set(draws)) == len(IDS)


def test_the_seed_changes_which_orders_are_declined() -> None:
    unseeded, seeded = provider(0.5), provider(0.5, seed=1)
    assert [unseeded.declines(i) for i in IDS] != [seeded.declines(i) for i in IDS]
    assert [seeded.declines(i) for i in IDS] == [provider(0.5, seed=1).declines(i) for i in IDS]


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_the_failure_rate_is_the_share_declined(rate: float) -> None:
    sim = provider(rate, seed=3)
    share = sum(sim.declines(i) for i in IDS) / len(IDS)
    assert abs(share - rate) < 0.05


def test_a_higher_rate_declines_a_superset() -> None:
    low, high = provider(0.2, seed=9), provider(0.6, seed=9)
    assert {i for i in IDS if low.declines(i)} <= {i for i in IDS if high.declines(i)}


async def test_rate_zero_approves_and_rate_one_declines_everything() -> None:
    for order_id in IDS[:50]:
        assert await provider(0.0).authorize(order_id, AMOUNT) == ProviderDecision(True)
        assert await provider(1.0).authorize(order_id, AMOUNT) == ProviderDecision(
            False, DECLINED_BY_PROVIDER
        )


async def test_redelivery_gets_the_same_answer() -> None:
    sim = provider(0.5, seed=5)
    for order_id in IDS[:200]:
        first = await sim.authorize(order_id, AMOUNT)
        assert await sim.authorize(order_id, Money(1, "USD")) == first
        assert first.approved is not sim.declines(order_id)


async def test_latency_is_applied() -> None:
    started = time.monotonic()
    await provider(0.0, latency_ms=50).authorize(ORDER, AMOUNT)
    assert time.monotonic() - started >= 0.045


@pytest.mark.parametrize(
    ("latency_ms", "rate"),
    [
        (-1, 0.0),
        (float("nan"), 0.0),
        (float("inf"), 0.0),
        (0, -0.01),
        (0, 1.01),
        (0, float("nan")),
    ],
)
def test_simulator_refuses_bad_settings(latency_ms: float, rate: float) -> None:
    with pytest.raises(ValueError):
        PaymentProviderSimulator(latency_ms=latency_ms, failure_rate=rate)


def test_settings_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LATENCY_MS", "FAILURE_RATE", "SEED"):
        monkeypatch.delenv(f"SHOP_PAYMENT_PROVIDER_{name}", raising=False)
    settings = PaymentSettings()
    assert (settings.provider_latency_ms, settings.provider_failure_rate) == (2.0, 0.0)
    assert settings.provider_seed is None


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOP_PAYMENT_PROVIDER_LATENCY_MS", "15")
    monkeypatch.setenv("SHOP_PAYMENT_PROVIDER_FAILURE_RATE", "0.25")
    monkeypatch.setenv("SHOP_PAYMENT_PROVIDER_SEED", "7")
    sim = PaymentProviderSimulator.from_settings(PaymentSettings())
    assert (sim.latency_ms, sim.failure_rate, sim.seed) == (15.0, 0.25, 7)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SHOP_PAYMENT_PROVIDER_LATENCY_MS", "-1"),
        ("SHOP_PAYMENT_PROVIDER_LATENCY_MS", "inf"),
        ("SHOP_PAYMENT_PROVIDER_LATENCY_MS", "soon"),
        ("SHOP_PAYMENT_PROVIDER_FAILURE_RATE", "-0.1"),
        ("SHOP_PAYMENT_PROVIDER_FAILURE_RATE", "1.5"),
        ("SHOP_PAYMENT_PROVIDER_FAILURE_RATE", "nan"),
    ],
)
def test_settings_refuse_bad_values(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError):
        PaymentSettings()
