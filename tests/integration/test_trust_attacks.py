"""The attack battery (`python -m devstack.attack`) against the test stack: every forged
key, event and login is refused by the server, and the verifier sees nothing changed."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from devstack import attack
from devstack.stack import Stack
from ops.trust.attacks import Attacker, Endpoints, Identity, run_attacks
from ops.trust.postgres_roles import read_password
from shared.tls import GATEWAY

pytestmark = pytest.mark.integration

# The attacks without credentials, then nine with each attacker's.
WITHOUT_CREDENTIALS = 5
PER_ATTACKER = 9


def stolen(stack: Stack, name: str) -> Attacker:
    password = read_password(stack.postgres.passwords_dir, f"shop_{name}")
    return Attacker(Identity(stack.tls_dir, name), password)


async def test_every_attack_is_refused_with_nothing_changed(stack: Stack) -> None:
    where = Endpoints(
        stack.etcd_endpoint, stack.kafka_bootstrap, f"127.0.0.1:{stack.postgres.port}"
    )
    outcomes = await run_attacks(
        where,
        [stolen(stack, "product"), stolen(stack, GATEWAY)],
        Identity(stack.tls_dir, "operator"),
    )
    assert len(outcomes) == WITHOUT_CREDENTIALS + 2 * PER_ATTACKER
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
    # The edge's pod, stolen: no config, no other service's registration, no event, no
    # other database.
    assert "permission denied" in answers["etcd: gateway writes /config/global"]
    assert "permission denied" in answers["etcd: gateway registers a forged order instance"]
    for topic in ("shop.orders.v1", "shop.inventory.v1", "shop.payments.v1"):
        answer = answers[f"kafka: gateway produces a forged InventoryReserved to {topic}"]
        assert "TopicAuthorizationFailed" in answer
    assert "pg_hba.conf rejects" in answers["postgres: shop_gateway opens shop_order"]


def test_the_command_exits_zero_and_says_so(stack: Stack) -> None:
    result = CliRunner().invoke(attack.app, ["--profile", stack.profile.name])
    assert result.exit_code == 0, result.output
    total = WITHOUT_CREDENTIALS + 2 * PER_ATTACKER  # product's and the gateway's, by default
    assert f"{total} of {total} attacks refused with nothing changed" in result.output
