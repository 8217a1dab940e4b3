"""The attack battery (`python -m devstack.attack`) against the test stack: every forged
key, event and login is refused by the server, and the verifier sees nothing changed."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from devstack import attack
from devstack.stack import Stack
from ops.trust.attacks import Endpoints, Identity, run_attacks
from ops.trust.postgres_roles import read_password

pytestmark = pytest.mark.integration


async def test_every_attack_is_refused_with_nothing_changed(stack: Stack) -> None:
    where = Endpoints(
        stack.etcd_endpoint, stack.kafka_bootstrap, f"127.0.0.1:{stack.postgres.port}"
    )
    password = read_password(stack.postgres.passwords_dir, "shop_product")
    outcomes = await run_attacks(
        where, Identity(stack.tls_dir, "product"), password, Identity(stack.tls_dir, "operator")
    )
    assert len(outcomes) == 14
    failed = [o for o in outcomes if not o.held]
    assert failed == []
    # Each was refused for the reason under test, not by a broken setup.
    answers = {o.attack: o.answer for o in outcomes}
    assert "permission denied" in answers["etcd: product writes the JWKS"]
    assert (
        "TopicAuthorizationFailed"
        in answers["kafka: product produces a forged InventoryReserved to shop.inventory.v1"]
    )
    assert "pg_hba.conf rejects" in answers["postgres: shop_product opens shop_order"]


def test_the_command_exits_zero_and_says_so(stack: Stack) -> None:
    result = CliRunner().invoke(attack.app, ["--profile", stack.profile.name])
    assert result.exit_code == 0, result.output
    assert "14 of 14 attacks refused with nothing changed" in result.output
