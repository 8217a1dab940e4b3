"""The attack battery (ops/trust/attacks.py) against a local stack: its ports, and the
stolen credentials and the verifier's certificate from its own files.

python -m devstack.attack --profile dev                   # `make run`'s stack
python -m devstack.attack --profile dev --attacker order  # another service's credentials
"""

from __future__ import annotations

from typing import Annotated

import typer

from devstack.stack import Stack
from ops.trust import __main__ as trust_cli
from ops.trust.rights import pg_role

app = typer.Typer(add_completion=False)


@app.command()
def main(
    profile: Annotated[str, typer.Option(help="a local stack (make run's is dev)")] = "dev",
    attacker: Annotated[
        str, typer.Option(help="the service whose credentials are stolen")
    ] = "product",
) -> None:
    """Forged keys, events and logins against the stack's etcd, Kafka and PostgreSQL; exit 1
    unless every one is refused with nothing changed."""
    stack = Stack(profile)
    trust_cli.attack(
        etcd=stack.etcd_endpoint,
        kafka=stack.kafka_bootstrap,
        postgres=f"127.0.0.1:{stack.postgres.port}",
        attacker=attacker,
        attacker_tls_dir=stack.tls_dir,
        attacker_pg_password_file=stack.postgres.passwords_dir / pg_role(attacker),
        verifier_tls_dir=stack.tls_dir,
    )


if __name__ == "__main__":
    app()
