"""Injected faults: which calls the interceptor fails, with a fake random source."""

from __future__ import annotations

import pytest

from shared.config.center import ConfigCenter
from shared.config.models import Faults, GlobalConfig, ServiceKnobs
from shared.errors import Unavailable, reason_name
from shared.rpc.interceptors.faults import FaultInjectionInterceptor, InjectedFault
from shared.rpc.status import status_code

GET = "/shop.product.v1.ProductService/GetProduct"


def interceptor(rate: float, draw: float, *, own: float | None = None) -> FaultInjectionInterceptor:
    knobs = ServiceKnobs(faults=Faults(unavailable_rate=own)) if own is not None else None
    center = ConfigCenter.fixed(
        "product", GlobalConfig(faults=Faults(unavailable_rate=rate)), knobs
    )
    return FaultInjectionInterceptor(center, rand=lambda: draw)


def test_a_draw_under_the_rate_fails_the_call() -> None:
    with pytest.raises(InjectedFault, match="injected fault: 30% of calls fail"):
        interceptor(0.3, 0.29).admit(GET, None)  # type: ignore[arg-type]
    interceptor(0.3, 0.3).admit(GET, None)  # type: ignore[arg-type]  # not under: goes through


def test_no_rate_no_fault() -> None:
    interceptor(0.0, 0.0).admit(GET, None)  # type: ignore[arg-type]


def test_the_services_own_document_overrides_the_global_one() -> None:
    interceptor(1.0, 0.5, own=0.0).admit(GET, None)  # type: ignore[arg-type]
    with pytest.raises(InjectedFault):
        interceptor(0.0, 0.5, own=1.0).admit(GET, None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "method",
    [
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    ],
)
def test_health_and_reflection_are_never_failed(method: str) -> None:
    interceptor(1.0, 0.0).admit(method, None)  # type: ignore[arg-type]


def test_an_injected_fault_is_unavailable_with_its_own_reason() -> None:
    fault = InjectedFault("x")
    assert isinstance(fault, Unavailable)
    assert status_code(fault).name == "UNAVAILABLE"
    assert reason_name(fault.reason) == "INJECTED_FAULT"
