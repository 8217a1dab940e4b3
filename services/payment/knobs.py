"""Payment's runtime knobs: ``/config/payment`` in the config center (shared/config/).

The provider simulator's knobs also have environment settings
(services/payment/settings.py), which are their defaults until the document names them.
"""

from __future__ import annotations

from pydantic import Field

from shared.config.models import ServiceKnobs


class PaymentKnobs(ServiceKnobs):
    provider_latency_ms: float = Field(default=2.0, ge=0, le=60_000, allow_inf_nan=False)
    provider_failure_rate: float = Field(default=0.0, ge=0, le=1, allow_inf_nan=False)
    # The simulator misbehaving (services/payment/provider.py): calls that fail before
    # charging, and charges whose reply is lost.
    provider_error_rate: float = Field(default=0.0, ge=0, le=1, allow_inf_nan=False)
    provider_lost_reply_rate: float = Field(default=0.0, ge=0, le=1, allow_inf_nan=False)
