"""Money as integer minor units plus an ISO 4217 currency: never a float."""

from __future__ import annotations

from dataclasses import dataclass

from shared.errors import FailedPrecondition

# Ten billion minor units: a bound that keeps sums far inside BIGINT.
MAX_AMOUNT_MINOR = 10_000_000_000


@dataclass(frozen=True, slots=True)
class Money:
    amount_minor: int
    currency: str

    def __add__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(self.amount_minor + other.amount_minor, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(self.amount_minor - other.amount_minor, self.currency)

    def times(self, quantity: int) -> Money:
        return Money(self.amount_minor * quantity, self.currency)

    def _same_currency(self, other: Money) -> None:
        if other.currency != self.currency:
            raise FailedPrecondition(f"cannot mix {self.currency} and {other.currency}")
