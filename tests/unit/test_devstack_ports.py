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


def test_no_port_is_in_the_ephemeral_range() -> None:
    """Linux hands ports 32768-60999 to outgoing connections: a stack's port there may be
    held by some client at the moment its server binds it (bench-plain's Kafka on 36092
    failed so, after a bench's burst of connections)."""
    for profile in PROFILES.values():
        ports = [getattr(profile.ports, f.name) for f in fields(profile.ports)]
        inside = [p for p in [*ports, profile.ports.etcd_metrics] if 32768 <= p <= 60999]
        assert not inside, f"{profile.name}: {inside}"
