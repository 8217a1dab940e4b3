"""Stock rules, in plain Python with no I/O.

A stock row is a small ledger: every unit ever received is available, reserved
or sold, so ``available + reserved + sold == total_received`` always holds.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from shared.errors import InvalidArgument
from shared.validation import require_batch, require_range

# The catalog's SKU format. Duplicated from the product service on purpose:
# services share contracts, not code.
SKU_PATTERN = re.compile(r"[A-Z0-9][A-Z0-9-]{1,63}")
MAX_AVAILABLE = 1_000_000_000
MAX_BATCH = 100


@dataclass(frozen=True, slots=True)
class Stock:
    sku: str
    available: int
    reserved: int
    sold: int
    total_received: int
    updated_at: datetime

    @property
    def balanced(self) -> bool:
        return self.available + self.reserved + self.sold == self.total_received


def parse_sku(value: str, field: str = "sku") -> str:
    if not value:
        raise InvalidArgument(field, "is required")
    # fullmatch, not match with '$': '$' also matches before a trailing newline.
    if not SKU_PATTERN.fullmatch(value):
        raise InvalidArgument(
            field,
            "must be 2-64 characters of A-Z, 0-9 and '-', starting with a letter or digit,"
            f" got {value[:70]!r}",
        )
    return value


def parse_skus(values: Sequence[str], field: str = "skus") -> list[str]:
    """Distinct SKUs in request order; rejects the whole batch if any one is malformed."""
    skus = require_batch(values, field, max_items=MAX_BATCH)
    return [parse_sku(sku, f"{field}[{i}]") for i, sku in enumerate(skus)]


def require_available(value: int, field: str = "available") -> int:
    return require_range(value, field, low=0, high=MAX_AVAILABLE)
