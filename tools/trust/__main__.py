"""trust: apply the rights table (tools/trust/rights.py) to a running party, as its administrator.

python -m tools.trust kafka --bootstrap kafka:9092 --tls-dir /tls   # topics, then ACLs

Safe to repeat; a Kubernetes Job runs it after every deploy. devstack does the same
for a local stack.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)


@app.callback()
def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")


@app.command()
def kafka(
    bootstrap: Annotated[str, typer.Option(help="host:port of Kafka's SSL listener")],
    tls_dir: Annotated[
        Path, typer.Option(help="ca.pem, operator.pem and operator-key.pem (shared/tls.py)")
    ],
    replication_factor: Annotated[int, typer.Option(help="of topics it creates")] = 1,
) -> None:
    """Create the saga's topics and make Kafka's ACLs match KAFKA_GRANTS, as the operator."""
    from tools.trust.kafka_acls import provision

    done = asyncio.run(provision(bootstrap, tls_dir, replication_factor))
    typer.echo(
        f"kafka {bootstrap}: topics created {done.topics or 'none'};"
        f" ACLs granted {len(done.acls.created)}, revoked {len(done.acls.deleted)}"
    )


if __name__ == "__main__":
    app()
