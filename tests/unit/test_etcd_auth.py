"""The pure half of ops/trust/etcd_auth.py: the rights table as etcd permissions, and
what turns a role's current permissions into the wanted ones."""

from __future__ import annotations

import pytest

from ops.trust.etcd_auth import READ, READWRITE, desired_roles, permissions, role_change
from ops.trust.rights import ETCD_ROLES, KeyRange, prefix_end
from pki.identities import PROMETHEUS_TARGETS, SERVICES
from shared.tls import GATEWAY, OPERATOR


def test_a_prefix_ends_at_its_last_byte_plus_one() -> None:
    assert prefix_end("/services/") == "/services0"
    assert KeyRange.prefix("/config/") == KeyRange("/config/", "/config0")


def test_read_and_write_ranges_become_read_and_readwrite_permissions() -> None:
    wanted = permissions(
        [
            KeyRange.prefix("/services/user/", write=True),
            KeyRange.prefix("/services/"),
            KeyRange("/config/auth/jwks", write=True),  # end "": the single key
        ]
    )
    assert wanted == {
        (b"/services/user/", b"/services/user0"): READWRITE,
        (b"/services/", b"/services0"): READ,
        (b"/config/auth/jwks", b""): READWRITE,
    }


@pytest.mark.parametrize("order", [1, -1])
def test_the_same_range_read_and_written_is_readwrite_whatever_the_order(order: int) -> None:
    ranges = [KeyRange.prefix("/config/"), KeyRange.prefix("/config/", write=True)][::order]
    assert permissions(ranges) == {(b"/config/", b"/config0"): READWRITE}


def test_every_party_has_a_role_of_its_own_name() -> None:
    assert set(desired_roles()) == {*SERVICES, GATEWAY, OPERATOR, PROMETHEUS_TARGETS}
    assert desired_roles() == {name: permissions(ranges) for name, ranges in ETCD_ROLES.items()}


def test_only_the_user_service_writes_the_jwks() -> None:
    jwks = b"/config/auth/jwks"

    def writes(perms: dict[tuple[bytes, bytes], int]) -> bool:
        return any(
            kind == READWRITE and start <= jwks and (jwks < end if end else jwks == start)
            for (start, end), kind in perms.items()
        )

    writers = {name for name, perms in desired_roles().items() if writes(perms)}
    assert writers == {"user"}


def test_the_operator_writes_config_around_the_auth_prefix() -> None:
    operator = desired_roles()[OPERATOR]
    assert operator[(b"/config/", b"/config/auth/")] == READWRITE
    assert operator[(b"/config/auth0", b"/config0")] == READWRITE
    assert not any(kind == READWRITE for kind in desired_roles()[PROMETHEUS_TARGETS].values())


def test_the_gateway_writes_only_its_own_registrations_and_status() -> None:
    """It discovers the services and reads the config (with the JWKS), registers itself
    and reports the config it applied, as a service does; nothing else."""
    gateway = desired_roles()[GATEWAY]
    written = {span for span, kind in gateway.items() if kind == READWRITE}
    assert written == {
        (b"/services/gateway/", b"/services/gateway0"),
        (b"/config-status/gateway/", b"/config-status/gateway0"),
    }
    read = {span for span, kind in gateway.items() if kind == READ}
    assert read == {(b"/services/", b"/services0"), (b"/config/", b"/config0")}


def test_nothing_to_change_when_etcd_matches() -> None:
    wanted = desired_roles()["order"]
    assert not role_change(dict(wanted), wanted)


def test_missing_and_retyped_permissions_are_granted_and_stray_ones_revoked() -> None:
    wanted = {(b"/a/", b"/a0"): READWRITE, (b"/b/", b"/b0"): READ, (b"/k", b""): READWRITE}
    current = {
        (b"/a/", b"/a0"): READ,  # type differs: granted again, which replaces it
        (b"/b/", b"/b0"): READ,  # as wanted
        (b"/config/", b"/config0"): READWRITE,  # added by hand: revoked
    }
    change = role_change(current, wanted)
    assert change.grant == {(b"/a/", b"/a0"): READWRITE, (b"/k", b""): READWRITE}
    assert change.revoke == [(b"/config/", b"/config0")]
