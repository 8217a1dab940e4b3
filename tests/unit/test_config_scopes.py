"""The config center's documents: the kit validates whatever scopes it is given, and the
tools' table of them agrees with what each service declares."""

from __future__ import annotations

import pytest

from ops.config_admin import SCOPES
from services.inventory.main import SERVICE as INVENTORY
from services.order.knobs import OrderKnobs
from services.order.main import SERVICE as ORDER
from services.payment.main import SERVICE as PAYMENT
from services.product.main import SERVICE as PRODUCT
from services.user.main import SERVICE as USER
from shared.config import store
from shared.config.center import ConfigCenter
from shared.config.models import ConfigScopes, GlobalConfig, ServiceKnobs


def test_the_tools_scopes_are_the_services_own_knobs() -> None:
    declared = {s.name: s.knobs for s in (USER, PRODUCT, INVENTORY, PAYMENT, ORDER)}
    assert dict(SCOPES) == {"global": GlobalConfig, **declared}
    assert next(iter(SCOPES)) == "global"


def test_a_document_is_checked_against_its_scopes_model() -> None:
    store.check_document(SCOPES, "order", {"saga_timeout_seconds": 60})
    with pytest.raises(store.InvalidDocument, match="saga_timeout_seconds"):
        store.check_document(SCOPES, "order", {"saga_timeout_seconds": -1})
    # Another service's knob is a typo there: refused, not ignored.
    with pytest.raises(store.InvalidDocument, match="saga_timeout_seconds"):
        store.check_document(SCOPES, "product", {"saga_timeout_seconds": 60})
    with pytest.raises(store.InvalidDocument, match="unknown scope 'nosuch'"):
        store.check_document(SCOPES, "nosuch", {})


def test_scopes_name_no_service_of_their_own() -> None:
    only_one = ConfigScopes({"product": ServiceKnobs})
    assert list(only_one) == ["global", "product"]
    with pytest.raises(ValueError, match="unknown scope 'order'"):
        only_one.model_for("order")
    with pytest.raises(ValueError, match="not a service"):
        ConfigScopes({"global": ServiceKnobs})


def test_a_center_validates_its_service_document_with_the_knobs_passed_in() -> None:
    center = ConfigCenter("order", {"saga_timeout_seconds": 45}, knobs=OrderKnobs)
    knobs = center.current.service
    assert isinstance(knobs, OrderKnobs) and knobs.saga_timeout_seconds == 45
    assert center._accept("order", b'{"saga_timeout_seconds": 0}', 7) is False
    assert center.refused == {"order": 7}
