"""W3C trace context carried from a gRPC call into events, and from event to event.

The saga is one trace: PlaceOrder starts it (or continues the caller's), the
outbox stores the ``traceparent`` with each event, the relay puts it in the
Kafka record headers, and a consumer makes it current while it handles the
event, so the events it emits continue the same trace.
"""

from __future__ import annotations

import os
import re
from contextvars import ContextVar

HEADER = "traceparent"
_FORMAT = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")
_current: ContextVar[str | None] = ContextVar("shop_traceparent", default=None)


def new_traceparent(trace_id: str | None = None) -> str:
    return f"00-{trace_id or os.urandom(16).hex()}-{os.urandom(8).hex()}-01"


def child_of(traceparent: str | None) -> str:
    """A new span id in the same trace; a new trace when there is no valid parent."""
    if traceparent and _FORMAT.match(traceparent):
        return new_traceparent(traceparent.split("-")[1])
    return new_traceparent()


def set_current(traceparent: str | None) -> None:
    _current.set(traceparent if traceparent and _FORMAT.match(traceparent) else None)


def current() -> str:
    """The current traceparent, starting a trace if none is current."""
    value = _current.get()
    if value is None:
        value = new_traceparent()
        _current.set(value)
    return value


def trace_id(traceparent: str) -> str:
    return traceparent.split("-")[1]
