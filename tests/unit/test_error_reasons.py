"""Error reasons are the contract's enum (protos/shop/common/v1/error_reason.proto): every
error a caller can see names one, and the enum lists nothing no one sends."""

from __future__ import annotations

import importlib
import pkgutil

import services
import shared
from shared.errors import DomainError, InvalidArgument, NotFound, RateLimited, reason_name
from shared.rpc import status
from shop.common.v1.error_reason_pb2 import ErrorReason


def _every_error_class() -> set[type[DomainError]]:
    for package in (shared, services):
        for module in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            if not module.name.endswith(".main"):  # entry points only: nothing declared there
                importlib.import_module(module.name)
    found: set[type[DomainError]] = set()
    todo: list[type[DomainError]] = [DomainError]
    while todo:
        cls = todo.pop()
        found.add(cls)
        todo.extend(cls.__subclasses__())
    return found


def test_the_trailer_carries_the_name_without_its_prefix() -> None:
    assert reason_name(ErrorReason.ERROR_REASON_NOT_FOUND) == "NOT_FOUND"
    assert dict(status.trailers(NotFound("x")))[status.REASON_KEY] == "NOT_FOUND"
    trailers = dict(status.trailers(InvalidArgument("sku", "is empty")))
    assert trailers == {status.REASON_KEY: "INVALID_ARGUMENT", status.FIELD_KEY: "sku"}
    limited = dict(status.trailers(RateLimited("slow down", retry_after_ms=250)))
    assert limited[status.REASON_KEY] == "RATE_LIMITED" and limited[status.RETRY_AFTER_KEY] == "250"


def test_every_error_class_names_a_reason_of_the_contract() -> None:
    classes = _every_error_class()
    assert len(classes) > 10  # the walk found the services' errors too
    for cls in classes:
        assert cls.reason in ErrorReason.values(), cls
        assert cls.reason != ErrorReason.ERROR_REASON_UNSPECIFIED, cls


def test_every_reason_of_the_contract_is_sent_by_someone() -> None:
    raised = {cls.reason for cls in _every_error_class()}
    # Decided by the calling client itself, or for an unexpected failure (shared/rpc/status.py).
    local = {
        ErrorReason.Value(f"ERROR_REASON_{name}")
        for name in (
            status.CIRCUIT_OPEN,
            status.DEADLINE_BUDGET_SPENT,
            status.INSTANCE_LEFT,
            status.INTERNAL,
        )
    }
    unused = set(ErrorReason.values()) - raised - local - {ErrorReason.ERROR_REASON_UNSPECIFIED}
    assert not unused, [ErrorReason.Name(v) for v in unused]
