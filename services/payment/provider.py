"""A simulated payment provider: it answers after a delay and declines a configured share.

Its answer for an order depends only on the order id and the seed, never on
chance at call time. A redelivered InventoryReserved therefore gets the answer
the first delivery got (like a real provider keyed by an idempotency key), and
a test can tell in advance which orders will be declined.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import uuid
from dataclasses import dataclass

from services.payment.domain import DECLINED_BY_PROVIDER
from services.payment.settings import PaymentSettings
from shared.config.center import RuntimeConfig
from shared.config.models import PaymentKnobs
from shared.money import Money

_DRAW_BITS = 64


@dataclass(frozen=True, slots=True)
class ProviderDecision:
    approved: bool
    reason: str = ""


APPROVED = ProviderDecision(approved=True)
DECLINED = ProviderDecision(approved=False, reason=DECLINED_BY_PROVIDER)


class PaymentProviderSimulator:
    def __init__(
        self, *, latency_ms: float = 2.0, failure_rate: float = 0.0, seed: int | None = None
    ) -> None:
        if not (math.isfinite(latency_ms) and latency_ms >= 0):
            raise ValueError(f"latency_ms must be a finite number >= 0, got {latency_ms}")
        if not (math.isfinite(failure_rate) and 0 <= failure_rate <= 1):
            raise ValueError(f"failure_rate must be between 0 and 1, got {failure_rate}")
        self.latency_ms = latency_ms
        self.failure_rate = failure_rate
        self.seed = seed

    @classmethod
    def from_settings(cls, settings: PaymentSettings) -> PaymentProviderSimulator:
        return cls(
            latency_ms=settings.provider_latency_ms,
            failure_rate=settings.provider_failure_rate,
            seed=settings.provider_seed,
        )

    def follow(self, config: RuntimeConfig) -> None:
        """The config center's latency and failure rate, from now on (both at once: no
        await between the two assignments, so no charge sees one without the other)."""
        knobs = config.service
        if isinstance(knobs, PaymentKnobs):
            self.latency_ms = knobs.provider_latency_ms
            self.failure_rate = knobs.provider_failure_rate

    def draw(self, order_id: uuid.UUID) -> float:
        """The order's fixed number in [0, 1); the provider declines it below failure_rate."""
        salt = b"" if self.seed is None else f"{self.seed}:".encode()
        digest = hashlib.sha256(salt + order_id.bytes).digest()
        return int.from_bytes(digest[: _DRAW_BITS // 8], "big") / 2**_DRAW_BITS

    def declines(self, order_id: uuid.UUID) -> bool:
        return self.draw(order_id) < self.failure_rate

    async def authorize(self, order_id: uuid.UUID, amount: Money) -> ProviderDecision:
        """Approves or declines the charge of ``amount``; the amount does not sway the answer."""
        await asyncio.sleep(self.latency_ms / 1000)
        return DECLINED if self.declines(order_id) else APPROVED
