"""The catalog's rules, in plain Python with no I/O."""

from __future__ import annotations

import enum
import re
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from shared.errors import InvalidArgument
from shared.money import Money
from shared.validation import require_text

SKU_PATTERN = re.compile(r"^[A-Z0-9][A-Z0-9-]{1,63}$")
MAX_TITLE = 200
MAX_DESCRIPTION = 2000
MAX_QUERY = 100
MAX_QUERY_WORDS = 5


class ProductStatus(enum.StrEnum):
    DRAFT = "draft"
    ACTIVE = "active"
    ARCHIVED = "archived"


@dataclass(frozen=True, slots=True)
class Product:
    product_id: uuid.UUID
    sku: str
    title: str
    description: str
    price: Money
    status: ProductStatus
    created_at: datetime
    updated_at: datetime

    @property
    def sellable(self) -> bool:
        return self.status is ProductStatus.ACTIVE

    def revise(
        self,
        *,
        title: str | None = None,
        description: str | None = None,
        price: Money | None = None,
        status: ProductStatus | None = None,
    ) -> Product:
        """A copy with the given fields changed; unset fields keep their value."""
        if price is not None and price.currency != self.price.currency:
            raise InvalidArgument("price.currency", f"must stay {self.price.currency}")
        return replace(
            self,
            title=_title(title) if title is not None else self.title,
            description=_description(description) if description is not None else self.description,
            price=price or self.price,
            status=status or self.status,
            updated_at=datetime.now(UTC),
        )


def _title(value: str) -> str:
    return require_text(value, "title", max_len=MAX_TITLE)


def _description(value: str) -> str:
    return require_text(value, "description", max_len=MAX_DESCRIPTION, min_len=0, multiline=True)


def new_product(
    *, sku: str, title: str, description: str, price: Money, status: ProductStatus
) -> Product:
    if not SKU_PATTERN.fullmatch(sku):
        raise InvalidArgument(
            "sku", "must be 2-64 characters of A-Z, 0-9 and '-', starting with a letter or digit"
        )
    now = datetime.now(UTC)
    return Product(
        product_id=uuid.uuid4(),
        sku=sku,
        title=_title(title),
        description=_description(description),
        price=price,
        status=status,
        created_at=now,
        updated_at=now,
    )


def search_words(query: str) -> tuple[str, ...]:
    """ListProducts' query as the words every match must contain, lower-cased; none for
    an empty query."""
    if len(query) > MAX_QUERY:
        raise InvalidArgument("query", f"must be at most {MAX_QUERY} characters")
    words = tuple(dict.fromkeys(query.lower().split()))
    if len(words) > MAX_QUERY_WORDS:
        raise InvalidArgument("query", f"must hold at most {MAX_QUERY_WORDS} words")
    return words


def matches(product: Product, words: tuple[str, ...]) -> bool:
    """Whether every word is in the product's title or SKU (what the SQL asks too)."""
    haystack = (product.title.lower(), product.sku.lower())
    return all(any(word in field for field in haystack) for word in words)
