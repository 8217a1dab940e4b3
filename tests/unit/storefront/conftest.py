"""The storefront's pages run on the same app and fakes as the gateway's routes."""

from tests.unit.gateway.conftest import gw, keys

__all__ = ["gw", "keys"]
