"""One log format for every process, so `make run` can interleave them."""

from __future__ import annotations

import logging
import sys


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stdout,
        format="%(asctime)s %(levelname)-5s %(name)s: %(message)s",
        force=True,
    )
    # aiokafka and grpc are chatty at INFO about routine reconnects.
    logging.getLogger("aiokafka").setLevel(logging.WARNING)


def apply_log_level(level: str) -> None:
    """The config center's log level, applied live to the root logger."""
    root = logging.getLogger()
    if logging.getLevelName(root.level) != level.upper():
        root.setLevel(level.upper())
        root.info("log level now %s", level.upper())
