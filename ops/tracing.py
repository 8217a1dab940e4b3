"""Tracing for the tools that call the shop (shopctl, the load harness, the chaos runner):
their RPCs start traces, sent to the stack's Zipkin, so a person can follow a call they
made into the services."""

from __future__ import annotations

import atexit
import socket
import uuid
from urllib.parse import urlsplit

from opentelemetry.trace import SpanKind

from shared.config.models import Tracing
from shared.observability.tracing import (
    LiveRatioSampler,
    start_tracing,
    stop_tracing,
    zipkin_exporter,
)


def reachable(endpoint: str, timeout: float = 0.3) -> bool:
    parts = urlsplit(endpoint)
    try:
        with socket.create_connection((parts.hostname or "", parts.port or 80), timeout):
            return True
    except OSError:
        return False


def trace_tool(name: str, endpoint: str) -> bool:
    """Traces this process's calls to ``endpoint`` (Zipkin's span URL), if it answers: a
    share of them, as the services sample what enters them, and every root marked
    ALWAYS_SAMPLE. Returns whether tracing is on; the spans still buffered go out when
    the process exits."""
    if not endpoint or not reachable(endpoint):
        return False
    # The config center's default ratio: a tool's load is sampled like any other traffic.
    ratio = Tracing().sample_ratio
    sampler = LiveRatioSampler(lambda: ratio, frozenset({SpanKind.CLIENT}))
    start_tracing(name, uuid.uuid4().hex[:12], zipkin_exporter(endpoint), sampler)
    atexit.register(stop_tracing)
    return True
