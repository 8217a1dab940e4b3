"""Every profile's daemons get their own ports: two stacks side by side never collide."""

from __future__ import annotations

from dataclasses import fields

from devstack.config import PROFILES


def test_no_port_is_used_twice_across_profiles() -> None:
    owners: dict[int, str] = {}
    for profile in PROFILES.values():
        for field in fields(profile.ports):
            port = getattr(profile.ports, field.name)
            where = f"{profile.name}.{field.name}"
            assert port not in owners, f"port {port}: {owners[port]} and {where}"
            owners[port] = where
            # Below the services' ports (50051 + 100 per replica) and the ephemeral ones' end.
            assert 1024 < port < 50051, where
