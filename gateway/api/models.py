"""The JSON of the REST API, and the protos it is made from.

Money is integer minor units with its currency, as in the protos; timestamps are
RFC 3339; enums are lower-case words. Request bodies are validated here (pydantic):
a field out of range is a 422 problem naming it, before any service is called.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from google.protobuf.timestamp_pb2 import Timestamp
from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.money import MAX_AMOUNT_MINOR
from shop.common.v1 import money_pb2
from shop.inventory.v1 import inventory_pb2
from shop.order.v1 import order_pb2
from shop.payment.v1 import payment_pb2
from shop.product.v1 import product_pb2

ProductStatus = Literal["draft", "active", "archived"]
OrderStatus = Literal["pending", "confirmed", "rejected", "cancelled"]
StockStatus = Literal["in_stock", "out_of_stock", "unknown"]
PRODUCT_STATUS: dict[int, ProductStatus] = {
    product_pb2.PRODUCT_STATUS_DRAFT: "draft",
    product_pb2.PRODUCT_STATUS_ACTIVE: "active",
    product_pb2.PRODUCT_STATUS_ARCHIVED: "archived",
}
PRODUCT_STATUS_PROTO = {name: value for value, name in PRODUCT_STATUS.items()}
ORDER_STATUS: dict[int, OrderStatus] = {
    order_pb2.ORDER_STATUS_PENDING: "pending",
    order_pb2.ORDER_STATUS_CONFIRMED: "confirmed",
    order_pb2.ORDER_STATUS_REJECTED: "rejected",
    order_pb2.ORDER_STATUS_CANCELLED: "cancelled",
}
FINAL_ORDER_STATUSES = frozenset({"confirmed", "rejected", "cancelled"})
UUID_PATTERN = r"^[0-9a-fA-F]{8}-?([0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}$"
SKU_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def when(ts: Timestamp) -> datetime | None:
    return ts.ToDatetime(tzinfo=UTC) if ts.seconds or ts.nanos else None


class Money(BaseModel):
    """An amount as the services answer it."""

    amount_minor: int = Field(examples=[1999])
    currency: str = Field(examples=["USD"])

    @classmethod
    def of(cls, money: money_pb2.Money) -> Money:
        return cls(amount_minor=money.amount_minor, currency=money.currency)


class MoneyIn(Strict):
    """An amount in a request: integer minor units of an ISO 4217 currency."""

    amount_minor: int = Field(ge=0, le=MAX_AMOUNT_MINOR, examples=[1999])
    currency: str = Field(pattern=r"^[A-Z]{3}$", examples=["USD"])

    def proto(self) -> money_pb2.Money:
        return money_pb2.Money(amount_minor=self.amount_minor, currency=self.currency)


class Product(BaseModel):
    product_id: str
    sku: str
    title: str
    description: str
    price: Money
    status: ProductStatus
    created_at: datetime | None
    updated_at: datetime | None

    @classmethod
    def of(cls, p: product_pb2.Product) -> Product:
        return cls(
            product_id=p.product_id,
            sku=p.sku,
            title=p.title,
            description=p.description,
            price=Money.of(p.price),
            status=PRODUCT_STATUS.get(p.status, "draft"),
            created_at=when(p.created_at),
            updated_at=when(p.updated_at),
        )


class ProductPage(BaseModel):
    products: list[Product]
    next_page_token: str | None = Field(description="Absent on the last page")


class StockView(BaseModel):
    """A product page's stock: ``unknown`` when inventory did not answer in time."""

    status: StockStatus
    available: int | None = None


class ProductDetail(Product):
    stock: StockView


class Stock(BaseModel):
    sku: str
    available: int
    status: StockStatus
    updated_at: datetime | None

    @classmethod
    def of(cls, s: inventory_pb2.Stock) -> Stock:
        return cls(
            sku=s.sku,
            available=s.available,
            status="in_stock" if s.available > 0 else "out_of_stock",
            updated_at=when(s.updated_at),
        )


class AdminStock(Stock):
    reserved: int
    sold: int
    total_received: int

    @classmethod
    def of(cls, s: inventory_pb2.Stock) -> AdminStock:
        return cls(
            **Stock.of(s).model_dump(),
            reserved=s.reserved,
            sold=s.sold,
            total_received=s.total_received,
        )


class OrderItem(BaseModel):
    product_id: str
    sku: str
    quantity: int
    unit_price: Money


class Order(BaseModel):
    order_id: str
    status: OrderStatus
    status_reason: str
    items: list[OrderItem]
    total: Money
    priced_from_cache: bool
    created_at: datetime | None
    updated_at: datetime | None

    @classmethod
    def of(cls, o: order_pb2.Order) -> Order:
        return cls(
            order_id=o.order_id,
            status=ORDER_STATUS.get(o.status, "pending"),
            status_reason=o.status_reason,
            items=[
                OrderItem(
                    product_id=i.product_id,
                    sku=i.sku,
                    quantity=i.quantity,
                    unit_price=Money.of(i.unit_price),
                )
                for i in o.items
            ],
            total=Money.of(o.total),
            priced_from_cache=o.priced_from_cache,
            created_at=when(o.created_at),
            updated_at=when(o.updated_at),
        )


class OrderPage(BaseModel):
    orders: list[Order]
    next_page_token: str | None = Field(description="Absent on the last page")


class Wallet(BaseModel):
    balance: Money
    updated_at: datetime | None

    @classmethod
    def of(cls, w: payment_pb2.Wallet) -> Wallet:
        return cls(balance=Money.of(w.balance), updated_at=when(w.updated_at))


class CartLineView(BaseModel):
    sku: str
    product_id: str
    quantity: int
    product: Product | None = Field(description="null when the catalog did not answer")


class Cart(BaseModel):
    items: list[CartLineView]


# --- request bodies ----------------------------------------------------------------------


class LineIn(Strict):
    product_id: str = Field(pattern=UUID_PATTERN)
    quantity: int = Field(ge=1, le=100)


class CartLineIn(Strict):
    sku: str = Field(pattern=SKU_PATTERN)
    product_id: str = Field(pattern=UUID_PATTERN)
    quantity: int = Field(ge=1, le=100)


class CartIn(Strict):
    items: list[CartLineIn] = Field(max_length=50)


class CartQuantityIn(Strict):
    product_id: str = Field(pattern=UUID_PATTERN)
    quantity: int = Field(ge=1, le=100)


class PlaceOrderIn(Strict):
    """Either ``items``, or ``from_cart: true`` (the caller's cart, emptied once placed)."""

    items: list[LineIn] | None = Field(default=None, min_length=1, max_length=50)
    from_cart: bool = False

    @model_validator(mode="after")
    def one_source(self) -> PlaceOrderIn:
        if (self.items is not None) == self.from_cart:
            raise ValueError("give either items or from_cart: true")
        return self


class TopUpIn(Strict):
    amount: MoneyIn

    @model_validator(mode="after")
    def positive(self) -> TopUpIn:
        if self.amount.amount_minor < 1:
            raise ValueError("amount.amount_minor must be at least 1")
        return self


class CreateProductIn(Strict):
    sku: str = Field(pattern=SKU_PATTERN)
    title: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=4000)
    price: MoneyIn
    status: ProductStatus = "active"


class UpdateProductIn(Strict):
    title: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=4000)
    price: MoneyIn | None = None
    status: ProductStatus | None = None


class SetStockIn(Strict):
    available: int = Field(ge=0, le=1_000_000_000)
