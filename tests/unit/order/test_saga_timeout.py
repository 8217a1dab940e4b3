"""The saga timeout's pure parts: when the Kafka link counts as healthy, and the two
knobs (the timeout on the saga clock, the wall-clock ceiling) with their validation.
The clock itself is SQL: tests/integration/test_order_saga_clock.py runs it."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.order.adapters.saga_timeout import LINK_STALE_SECONDS, KafkaLink, fetch_is_fresh
from services.order.knobs import OrderKnobs
from services.order.settings import OrderSettings
from shared.config.models import validate_document
from shared.service import knob_defaults


class Fetches:
    def __init__(self, last_fetch_at: float | None) -> None:
        self.last_fetch_at = last_fetch_at


@pytest.mark.parametrize(
    ("last", "now", "fresh"),
    [(None, 100.0, False), (100.0, 100.0, True), (97.0, 100.0, True), (96.9, 100.0, False)],
)
def test_a_fetch_is_fresh_within_the_stale_window(
    last: float | None, now: float, fresh: bool
) -> None:
    assert fetch_is_fresh(last, now, 3.0) is fresh


def test_the_link_is_healthy_only_with_a_recent_fetch_answer() -> None:
    now = 1_000.0
    assert not KafkaLink(wall=lambda: now).healthy()  # no consumer (yet, or none at all)
    assert not KafkaLink(Fetches(None), wall=lambda: now).healthy()  # owns no partition
    assert KafkaLink(Fetches(now - 0.01), wall=lambda: now).healthy()
    stale = now - LINK_STALE_SECONDS - 0.5
    assert not KafkaLink(Fetches(stale), wall=lambda: now).healthy()
    link = KafkaLink(wall=lambda: now)
    link.consumer = Fetches(now)  # set once messaging runs
    assert link.healthy()


def test_the_ceiling_defaults_to_twenty_timeouts() -> None:
    assert OrderKnobs().saga_timeout_ceiling_seconds == 600
    assert OrderKnobs(saga_timeout_seconds=6).saga_timeout_ceiling_seconds == 120
    knobs = OrderKnobs(saga_timeout_seconds=30, saga_timeout_max_seconds=45)
    assert knobs.saga_timeout_ceiling_seconds == 45
    assert OrderKnobs(saga_timeout_max_seconds=30).saga_timeout_ceiling_seconds == 30


def test_a_ceiling_below_the_timeout_is_refused_naming_both() -> None:
    with pytest.raises(ValidationError, match=r"saga_timeout_max_seconds \(10\) must be at least"):
        OrderKnobs(saga_timeout_seconds=30, saga_timeout_max_seconds=10)
    with pytest.raises(ValidationError, match="saga_timeout_seconds"):
        OrderSettings(saga_timeout_seconds=30, saga_timeout_max_seconds=10)
    for bad in (0, -1, float("inf"), 864_001):
        with pytest.raises(ValidationError, match="saga_timeout_max_seconds"):
            OrderKnobs(saga_timeout_max_seconds=bad)


def test_a_document_is_checked_against_the_environments_ceiling() -> None:
    defaults = knob_defaults(OrderSettings(saga_timeout_max_seconds=600), OrderKnobs)
    assert defaults["saga_timeout_max_seconds"] == 600
    live = validate_document(OrderKnobs, {"saga_timeout_seconds": 60}, defaults)
    assert live.saga_timeout_ceiling_seconds == 600
    with pytest.raises(ValidationError, match="must be at least"):
        validate_document(OrderKnobs, {"saga_timeout_seconds": 900}, defaults)
    both = {"saga_timeout_seconds": 900, "saga_timeout_max_seconds": 3600}
    assert validate_document(OrderKnobs, both, defaults).saga_timeout_ceiling_seconds == 3600


def test_the_ceiling_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOP_ORDER_SAGA_TIMEOUT_MAX_SECONDS", "900")
    assert OrderSettings().saga_timeout_max_seconds == 900
    monkeypatch.delenv("SHOP_ORDER_SAGA_TIMEOUT_MAX_SECONDS")
    assert OrderSettings().saga_timeout_max_seconds is None
