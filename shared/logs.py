"""One log format for every process, so `make run` can interleave them; and JSON lines
that join the traces.

The console gets readable lines. A service also writes JSON lines to a file of its
own (``log_dir``), each with the trace and span ids current when it was logged, so
every line of one order, across the five services, is one search for its trace id:

    python -m ops.shopctl logs <trace-id>
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace

from shared.settings import ServiceSettings

CONSOLE_FORMAT = "%(asctime)s %(levelname)-5s %(name)s: %(message)s"
# Lines for the JSON file only: a step of a sampled trace (each saga hop it takes), which
# a person following that trace wants and the console of `make run` under load does not.
JOURNAL = logging.getLogger("shop.journal")
JOURNAL.propagate = False


def journal(message: str, *args: object) -> None:
    """A step of the current trace, to the JSON file, if that trace is sampled."""
    if trace.get_current_span().is_recording():
        JOURNAL.info(message, *args)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, service, instance,
    trace_id and span_id (when a span is current), error_id (an unexpected error's
    id, the one its caller got), and the traceback when there is one."""

    def __init__(self, service: str, instance: str) -> None:
        super().__init__()
        self._service, self._instance = service, instance

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "service": self._service,
            "instance": self._instance,
        }
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            line["trace_id"] = format(span.trace_id, "032x")
            line["span_id"] = format(span.span_id, "016x")
        if (error_id := getattr(record, "error_id", None)) is not None:
            line["error_id"] = error_id
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def configure_logging(level: str, service: ServiceSettings | None = None) -> None:
    """Readable lines on stdout; and, for a service given a ``log_dir``, JSON lines in
    ``<log_dir>/<service>-<instance_id>.jsonl``."""
    logging.basicConfig(level=level.upper(), stream=sys.stdout, format=CONSOLE_FORMAT, force=True)
    if service is not None and service.log_dir is not None:
        path = service.log_dir / f"{service.service_name}-{service.instance_id}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(JsonFormatter(service.service_name, service.instance_id))
        logging.getLogger().addHandler(handler)
        JOURNAL.handlers = [handler]
    # aiokafka and grpc are chatty at INFO about routine reconnects.
    logging.getLogger("aiokafka").setLevel(logging.WARNING)


def apply_log_level(level: str) -> None:
    """The config center's log level, applied live to the root logger."""
    root = logging.getLogger()
    if logging.getLevelName(root.level) != level.upper():
        root.setLevel(level.upper())
        root.info("log level now %s", level.upper())
