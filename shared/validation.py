"""Request-field checks shared by every service's handlers.

Each check raises InvalidArgument naming the field, so bad input can never
reach the database or surface as INTERNAL.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from collections.abc import Sequence
from typing import Any

from shared.errors import InvalidArgument

_CURRENCY = re.compile(r"^[A-Z]{3}$")


def parse_uuid(value: object, field: str) -> uuid.UUID:
    if not value:
        raise InvalidArgument(field, "is required")
    if not isinstance(value, str):  # e.g. a field of a decoded page token
        raise InvalidArgument(field, "must be a UUID string")
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidArgument(field, f"must be a UUID, got {value[:40]!r}") from None


def require_text(value: str, field: str, *, max_len: int, min_len: int = 1) -> str:
    text = value.strip()
    if len(text) < min_len:
        raise InvalidArgument(field, "is required" if min_len == 1 else f"needs {min_len}+ chars")
    if len(text) > max_len:
        raise InvalidArgument(field, f"must be at most {max_len} characters")
    return text


def require_range(value: int, field: str, *, low: int, high: int) -> int:
    if not low <= value <= high:
        raise InvalidArgument(field, f"must be between {low} and {high}, got {value}")
    return value


def require_currency(value: str, field: str) -> str:
    if not _CURRENCY.match(value):
        raise InvalidArgument(field, f"must be a three-letter ISO 4217 code, got {value[:10]!r}")
    return value


def require_batch(values: Sequence[str], field: str, *, max_items: int) -> list[str]:
    if not values:
        raise InvalidArgument(field, "must not be empty")
    if len(values) > max_items:
        raise InvalidArgument(field, f"must hold at most {max_items} items, got {len(values)}")
    return list(dict.fromkeys(values))


def page_size(value: int, field: str = "page_size", *, default: int = 20, high: int = 100) -> int:
    if value == 0:
        return default
    return require_range(value, field, low=1, high=high)


def encode_page_token(cursor: dict[str, Any]) -> str:
    """Page tokens are opaque to clients: base64 of the keyset cursor."""
    return base64.urlsafe_b64encode(json.dumps(cursor).encode()).decode()


def decode_page_token(token: str, field: str = "page_token") -> dict[str, Any] | None:
    if not token:
        return None
    try:
        cursor = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise InvalidArgument(field, "is not a token this service issued") from None
    if not isinstance(cursor, dict):
        raise InvalidArgument(field, "is not a token this service issued")
    return cursor
