"""A simulated payment provider: it answers after a delay and declines a configured share.

Like a real provider, it is called with an idempotency key, the order id, and
keeps its own record of what it answered: a second authorisation of an order
returns the first answer and charges nothing more. Its answer for an order
depends only on the order id and the seed, never on chance at call time, so a
test can tell in advance which orders will be declined.

It can also misbehave, for the chaos runs and the tests (both rates are drawn
per order and attempt, so they are repeatable too):

- ``error_rate``: the call fails before anything is charged (ProviderUnavailable);
- ``lost_reply_rate``: the charge is made and recorded, then the reply is lost
  (ProviderTimeout): only a retry with the same key learns the answer.

One simulator lives in each payment instance, so its record is per instance; a
real provider's is shared by every caller. The payment record itself (one row
per order, claimed in the handling transaction) is what keeps the shop's books
right whichever instance asks.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import uuid
from collections import Counter, OrderedDict

from services.payment.domain import DECLINED_BY_PROVIDER, ProviderDecision
from services.payment.knobs import PaymentKnobs
from services.payment.settings import PaymentSettings
from shared.config.center import RuntimeConfig
from shared.money import Money

_DRAW_BITS = 64
# The provider's record of answers, oldest forgotten first past this many orders.
_RECORD_SIZE = 100_000


APPROVED = ProviderDecision(approved=True)
DECLINED = ProviderDecision(approved=False, reason=DECLINED_BY_PROVIDER)


class ProviderUnavailable(ConnectionError):
    """The provider could not be asked, or did not answer in time: nothing is known.
    A ConnectionError, so the consumer treats it as an outage (the batch is read again
    later), never as a bad event for the dead-letter topic."""


class ProviderTimeout(ProviderUnavailable):
    """No reply in time. The charge may have been made: ask again with the same key."""


def _rate(name: str, value: float) -> float:
    if not (math.isfinite(value) and 0 <= value <= 1):
        raise ValueError(f"{name} must be between 0 and 1, got {value}")
    return value


class PaymentProviderSimulator:
    def __init__(
        self,
        *,
        latency_ms: float = 2.0,
        failure_rate: float = 0.0,
        seed: int | None = None,
        error_rate: float = 0.0,
        lost_reply_rate: float = 0.0,
    ) -> None:
        if not (math.isfinite(latency_ms) and latency_ms >= 0):
            raise ValueError(f"latency_ms must be a finite number >= 0, got {latency_ms}")
        self.latency_ms = latency_ms
        self.failure_rate = _rate("failure_rate", failure_rate)
        self.error_rate = _rate("error_rate", error_rate)
        self.lost_reply_rate = _rate("lost_reply_rate", lost_reply_rate)
        self.seed = seed
        self._answers: OrderedDict[uuid.UUID, ProviderDecision] = OrderedDict()
        self._attempts: Counter[uuid.UUID] = Counter()
        self.charges: Counter[uuid.UUID] = Counter()  # approvals booked, per order
        self.in_flight = 0
        self.max_in_flight = 0

    @classmethod
    def from_settings(cls, settings: PaymentSettings) -> PaymentProviderSimulator:
        return cls(
            latency_ms=settings.provider_latency_ms,
            failure_rate=settings.provider_failure_rate,
            seed=settings.provider_seed,
        )

    def follow(self, config: RuntimeConfig) -> None:
        """The config center's knobs, from now on (all at once: no await between the
        assignments, so no call sees some of them without the others)."""
        knobs = config.service
        if isinstance(knobs, PaymentKnobs):
            self.latency_ms = knobs.provider_latency_ms
            self.failure_rate = knobs.provider_failure_rate
            self.error_rate = knobs.provider_error_rate
            self.lost_reply_rate = knobs.provider_lost_reply_rate

    def _draw(self, *parts: bytes) -> float:
        salt = b"" if self.seed is None else f"{self.seed}:".encode()
        digest = hashlib.sha256(salt + b"".join(parts)).digest()
        return int.from_bytes(digest[: _DRAW_BITS // 8], "big") / 2**_DRAW_BITS

    def draw(self, order_id: uuid.UUID) -> float:
        """The order's fixed number in [0, 1); the provider declines it below failure_rate."""
        return self._draw(order_id.bytes)

    def declines(self, order_id: uuid.UUID) -> bool:
        return self.draw(order_id) < self.failure_rate

    async def authorize(self, order_id: uuid.UUID, amount: Money) -> ProviderDecision:
        """Approves or declines the charge of ``amount`` once per order (the idempotency
        key); the amount does not sway the answer."""
        self._attempts[order_id] += 1
        attempt = self._attempts[order_id].to_bytes(4, "big")
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.latency_ms / 1000)
        finally:
            self.in_flight -= 1
        if self._draw(b"error", order_id.bytes, attempt) < self.error_rate:
            raise ProviderUnavailable(f"payment provider unavailable for order {order_id}")
        decision = self._answers.get(order_id)
        if decision is None:
            decision = DECLINED if self.declines(order_id) else APPROVED
            self._answers[order_id] = decision
            if decision.approved:
                self.charges[order_id] += 1
            if len(self._answers) > _RECORD_SIZE:
                forgotten, _ = self._answers.popitem(last=False)
                self._attempts.pop(forgotten, None)
        if self._draw(b"lost", order_id.bytes, attempt) < self.lost_reply_rate:
            raise ProviderTimeout(f"payment provider reply lost for order {order_id}")
        return decision
