"""Injected faults: a share of the calls refused UNAVAILABLE, for the demos and chaos runs."""

from __future__ import annotations

import random
from collections.abc import Callable

from shared.config.center import ConfigCenter
from shared.errors import Unavailable
from shared.rpc.interceptors.base import HEALTH_AND_REFLECTION, AdmissionInterceptor, Context
from shop.common.v1.error_reason_pb2 import ErrorReason


class InjectedFault(Unavailable):
    """A fault the config center asked for (``faults.unavailable_rate``), not a real one."""

    reason = ErrorReason.ERROR_REASON_INJECTED_FAULT


class FaultInjectionInterceptor(AdmissionInterceptor):
    """Answers UNAVAILABLE to ``config.current.faults.unavailable_rate`` of the calls, before
    the handler runs, so nothing is applied and a retry is safe: for the retry demo and
    chaos runs. Health and reflection are never failed (probes must tell the truth)."""

    def __init__(self, config: ConfigCenter, rand: Callable[[], float] = random.random) -> None:
        self._config = config
        self._rand = rand

    def admit(self, method: str, context: Context) -> None:
        if method.startswith(HEALTH_AND_REFLECTION):
            return
        rate = self._config.current.faults.unavailable_rate  # once: this call's view
        if rate > 0 and self._rand() < rate:
            raise InjectedFault(f"injected fault: {rate:.0%} of calls fail (config faults)")
