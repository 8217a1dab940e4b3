"""Request-field checks shared by every service's handlers.

Each check raises InvalidArgument naming the field, so bad input can never
reach the database or surface as INTERNAL.

One rule covers every string a service receives (``check_strings``, run at the
edge on every request by the interceptor chain): no NUL or other control
characters except tab and line breaks, and at most ``MAX_STRING_BYTES`` of
UTF-8. (Protobuf has already refused invalid UTF-8 in string fields while
parsing; ``shared.rpc.interceptors`` turns that into INVALID_ARGUMENT too.)
Field checks such as ``require_text`` are stricter on top of it.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from shared.errors import InvalidArgument

_CURRENCY = re.compile(r"[A-Z]{3}")
# C0 controls but tab, LF and CR; DEL; C1 controls. PostgreSQL text cannot hold NUL at all.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_LINE_BREAKS = re.compile(r"[\t\n\r\u2028\u2029]")
MAX_IDEMPOTENCY_KEY = 64
MAX_PAGE_TOKEN = 512
# Far above any field's own limit; bounds what a string can cost before field checks run.
MAX_STRING_BYTES = 16 * 1024


def check_string(value: str, field: str, *, max_bytes: int = MAX_STRING_BYTES) -> str:
    """The shared rule for every string a caller sends."""
    if (found := _CONTROL.search(value)) is not None:
        raise InvalidArgument(
            field, f"must not contain control characters (U+{ord(found.group()):04X})"
        )
    # A character is at most 4 bytes of UTF-8: most strings need no encoding to tell.
    if len(value) * 4 > max_bytes and len(value.encode("utf-8")) > max_bytes:
        raise InvalidArgument(field, f"must be at most {max_bytes} bytes of UTF-8")
    return value


def check_strings(message: Message) -> None:
    """``check_string`` on every string of a request, nested and repeated ones too."""
    for field, value in _strings(message, ""):
        check_string(value, field)


def _strings(message: Message, prefix: str) -> Iterator[tuple[str, str]]:
    for descriptor, value in message.ListFields():
        name = prefix + descriptor.name
        if descriptor.message_type is not None and descriptor.message_type.GetOptions().map_entry:
            for key, item in value.items():
                if isinstance(key, str):
                    yield f"{name}[key]", key
                if isinstance(item, str):
                    yield f"{name}[{key!r}]", item
                elif isinstance(item, Message):
                    yield from _strings(item, f"{name}[{key!r}].")
        elif descriptor.type == FieldDescriptor.TYPE_STRING:
            if descriptor.is_repeated:
                yield from ((f"{name}[{i}]", item) for i, item in enumerate(value))
            else:
                yield name, value
        elif descriptor.type == FieldDescriptor.TYPE_MESSAGE:
            if descriptor.is_repeated:
                for i, item in enumerate(value):
                    yield from _strings(item, f"{name}[{i}].")
            else:
                yield from _strings(value, f"{name}.")


def parse_uuid(value: object, field: str) -> uuid.UUID:
    if not value:
        raise InvalidArgument(field, "is required")
    if not isinstance(value, str):  # e.g. a field of a decoded page token
        raise InvalidArgument(field, "must be a UUID string")
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidArgument(field, f"must be a UUID, got {value[:40]!r}") from None


def uuids_in(values: Iterable[str]) -> set[uuid.UUID]:
    """The values that are UUIDs; the others left out (for work that must not be the one
    to refuse a bad value, such as taking locks before a handler decides)."""
    found = set()
    for value in values:
        try:
            found.add(uuid.UUID(value))
        except ValueError:
            continue
    return found


def require_text(
    value: str, field: str, *, max_len: int, min_len: int = 1, multiline: bool = False
) -> str:
    """Stripped text of ``min_len``..``max_len`` characters; one line unless ``multiline``."""
    text = check_string(value, field).strip()
    if not multiline and (found := _LINE_BREAKS.search(text)) is not None:
        raise InvalidArgument(field, f"must be one line (found U+{ord(found.group()):04X})")
    if len(text) < min_len:
        raise InvalidArgument(field, "is required" if min_len == 1 else f"needs {min_len}+ chars")
    if len(text) > max_len:
        raise InvalidArgument(field, f"must be at most {max_len} characters")
    return text


def require_idempotency_key(value: str, field: str = "idempotency_key") -> str:
    """Kept verbatim (not stripped): the client's key must round-trip exactly."""
    if not value.strip():
        raise InvalidArgument(field, "is required")
    if len(value) > MAX_IDEMPOTENCY_KEY:
        raise InvalidArgument(field, f"must be at most {MAX_IDEMPOTENCY_KEY} characters")
    # No control, format (e.g. bidi marks) or separator characters but the space.
    if not value.isprintable():
        raise InvalidArgument(field, "must hold printable characters only")
    return value


def require_range(value: int, field: str, *, low: int, high: int) -> int:
    if not low <= value <= high:
        raise InvalidArgument(field, f"must be between {low} and {high}, got {value}")
    return value


def require_currency(value: str, field: str) -> str:
    if not _CURRENCY.fullmatch(value):
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
    # Our tokens are ~120 characters; a long one is not ours, and could nest JSON
    # deep enough to exhaust the parser's recursion (found by the fuzzer).
    if len(token) > MAX_PAGE_TOKEN:
        raise InvalidArgument(field, "is not a token this service issued")
    try:
        cursor = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidArgument(field, "is not a token this service issued") from None
    if not isinstance(cursor, dict):
        raise InvalidArgument(field, "is not a token this service issued")
    return cursor
