"""The attack battery (ops/trust/attacks.py) against a local stack: its ports, and the
stolen credentials and the verifier's certificate from its own files.

python -m devstack.attack --profile dev                   # `make run`'s stack
python -m devstack.attack --profile dev --attacker order  # another party's credentials

By default the stolen credentials are product's (a service that owns none of what is
attacked) and the gateway's (the pod that faces the outside).
"""

from __future__ import annotations

from typing import Annotated

import typer

from devstack.stack import Stack
from ops.trust import __main__ as trust_cli
from shared.tls import GATEWAY

app = typer.Typer(add_completion=False)
ATTACKERS = ["product", GATEWAY]


@app.command()
def main(
    profile: Annotated[str, typer.Option(help="a local stack (make run's is dev)")] = "dev",
    attacker: Annotated[
        list[str] | None,
        typer.Option(
            help=f"a party whose credentials are stolen, repeat for more"
            f" (default: {' and '.join(ATTACKERS)})"
        ),
    ] = None,
) -> None:
    """Forged keys, events and logins against the stack's etcd, Kafka and PostgreSQL; exit 1
    unless every one is refused with nothing changed."""
    stack = Stack(profile)
    trust_cli.attack(
        etcd=stack.etcd_endpoint,
        kafka=stack.kafka_bootstrap,
        postgres=f"127.0.0.1:{stack.postgres.port}",
        attacker=attacker or ATTACKERS,
        attacker_tls_dir=stack.tls_dir,
        attacker_pg_passwords_dir=stack.postgres.passwords_dir,
        verifier_tls_dir=stack.tls_dir,
    )


if __name__ == "__main__":
    app()
