"""trust: the rights table (ops/trust/rights.py) applied to a running party, as its
administrator, and the attacks that must fail against it.

python -m ops.trust etcd --endpoint etcd:2379 --tls-dir /tls        # users, roles, auth on
python -m ops.trust kafka --bootstrap kafka:9092 --tls-dir /tls    # topics, then ACLs
python -m ops.trust postgres --dsn ADMIN_DSN --passwords-dir DIR    # roles, databases
python -m ops.trust attack --etcd ... --kafka ... --postgres ...    # the attacks (--help)
python -m devstack.attack --profile dev                             # them, against `make run`

Safe to repeat; Kubernetes Jobs run the first ones after every deploy (with --wait, as
the servers may still be starting), devstack does the same for a local stack.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar
from urllib.parse import parse_qs, urlsplit

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
T = TypeVar("T")

WaitOption = Annotated[
    float,
    typer.Option(help="seconds to keep trying while the server is not there yet (0: once)"),
]


@app.callback()
def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")


class Refused(Exception):
    """The server answered, and said no: waiting longer would not change it."""


def with_wait(what: str, wait: float, attempt: Callable[[], T]) -> T:
    """``attempt()`` until it succeeds, fails with ``Refused``, or ``wait`` runs out."""
    deadline = time.monotonic() + wait
    while True:
        try:
            return attempt()
        except Refused:
            raise
        except Exception as error:  # not reachable, not ready: try again while allowed
            if time.monotonic() >= deadline:
                raise
            print(f"trust {what}: waiting ({_one_line(error)})", file=sys.stderr)
            time.sleep(5)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:200] or "no answer"


def fail(what: str, error: BaseException) -> None:
    print(f"trust {what}: FAILED: {_one_line(error)}", file=sys.stderr)
    raise typer.Exit(1)


@app.command()
def etcd(
    endpoint: Annotated[str, typer.Option(help="host:port of etcd's client port")],
    tls_dir: Annotated[Path, typer.Option(help="ca.pem, root.pem and root-key.pem")],
    wait: WaitOption = 0,
) -> None:
    """etcd's users and roles as ETCD_ROLES says, then its authentication on, as its root."""
    import grpc

    from ops.trust.etcd_auth import apply_at

    def attempt() -> int:
        try:
            return len(asyncio.run(apply_at(endpoint, tls_dir)).changes)
        except FileNotFoundError as error:
            raise Refused(f"no root identity: {error}") from error
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.UNAVAILABLE:
                raise  # not up yet, or not answering: worth waiting for
            raise Refused(f"{error.code().name}: {error.details()}") from error

    try:
        changes = with_wait("etcd", wait, attempt)
    except Exception as error:
        fail("etcd", error)
    typer.echo(f"etcd {endpoint}: {changes} change(s); authentication on")


@app.command()
def kafka(
    bootstrap: Annotated[str, typer.Option(help="host:port of Kafka's SSL listener")],
    tls_dir: Annotated[
        Path, typer.Option(help="ca.pem, operator.pem and operator-key.pem (shared/tls.py)")
    ],
    replication_factor: Annotated[int, typer.Option(help="of topics it creates")] = 1,
    wait: WaitOption = 0,
) -> None:
    """Create the saga's topics and make Kafka's ACLs match KAFKA_GRANTS, as the operator."""
    from ops.trust.kafka_acls import provision

    try:
        done = with_wait(
            "kafka", wait, lambda: asyncio.run(provision(bootstrap, tls_dir, replication_factor))
        )
    except Exception as error:
        fail("kafka", error)
    typer.echo(
        f"kafka {bootstrap}: topics created {done.topics or 'none'};"
        f" ACLs granted {len(done.acls.created)}, revoked {len(done.acls.deleted)}"
    )


@app.command()
def postgres(
    dsn: Annotated[
        str, typer.Option(envvar="SHOP_PG_ADMIN_DSN", help="the administrator's DSN")
    ] = "",
    passwords_dir: Annotated[
        Path,
        typer.Option(
            help="one password per role, named after it (shop_<service>): a file, or a"
            " folder holding `password` (a mounted Secret)"
        ),
    ] = Path("/var/run/secrets/shop/postgres"),
    generate: Annotated[bool, typer.Option(help="create the missing password files")] = False,
    wait: WaitOption = 0,
) -> None:
    """One role per service, owning its database; the auditor, which may only read."""
    import asyncpg

    from ops.trust.postgres_roles import MANAGED_ROLES, apply, ensure_passwords, read_password

    if not dsn:
        raise typer.BadParameter("no administrator DSN (--dsn or SHOP_PG_ADMIN_DSN)")
    for ca in parse_qs(urlsplit(dsn).query).get("sslrootcert", []):
        if not Path(ca).is_file():
            raise typer.BadParameter(f"the DSN's sslrootcert {ca} is not a file")

    def attempt() -> list[str]:
        try:
            passwords = (
                ensure_passwords(passwords_dir, MANAGED_ROLES)
                if generate
                else {role: read_password(passwords_dir, role) for role in MANAGED_ROLES}
            )
        except (ValueError, OSError) as error:
            raise Refused(str(error)) from error
        try:
            return asyncio.run(apply(dsn, passwords))
        except asyncpg.InvalidAuthorizationSpecificationError as error:  # a wrong password too
            raise Refused(str(error)) from error

    try:
        done = with_wait("postgres", wait, attempt)
    except Exception as error:
        fail("postgres", error)
    for line in done or ["nothing to change"]:
        typer.echo(f"trust postgres: {line}")


@app.command()
def attack(
    etcd: Annotated[str, typer.Option(help="etcd's host:port")] = "",
    kafka: Annotated[str, typer.Option(help="Kafka's host:port")] = "",
    postgres: Annotated[str, typer.Option(help="PostgreSQL's host:port")] = "",
    attacker: Annotated[
        list[str] | None,
        typer.Option(help="a party whose credentials are stolen (repeat for more)"),
    ] = None,
    attacker_tls_dir: Annotated[
        Path | None, typer.Option(help="ca.pem and each attacker's key pair")
    ] = None,
    attacker_pg_passwords_dir: Annotated[
        Path | None,
        typer.Option(
            help="each attacker's role's password, named after the role (shop_<party>):"
            " a file, or a folder holding `password` (a mounted Secret)"
        ),
    ] = None,
    verifier_tls_dir: Annotated[
        Path | None, typer.Option(help="the operator's, to read the data before and after")
    ] = None,
) -> None:
    """Forged keys, events and logins against etcd, Kafka and PostgreSQL; exit 1 unless
    every one is refused with nothing changed. A local stack: `python -m devstack.attack`."""
    import os

    # The refusals are the point: gRPC's C core and aiokafka would log each one as an error.
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    from ops.trust.attacks import Attacker, Endpoints, Identity, report, run_attacks
    from ops.trust.postgres_roles import read_password
    from ops.trust.rights import pg_role

    if not (etcd and kafka and postgres):
        raise typer.BadParameter("give --etcd, --kafka and --postgres")
    where = Endpoints(etcd, kafka, postgres)
    if attacker_tls_dir is None or verifier_tls_dir is None or attacker_pg_passwords_dir is None:
        raise typer.BadParameter(
            "give the attackers' and the verifier's TLS dirs and the passwords dir"
        )
    try:
        attackers = [
            Attacker(
                Identity(attacker_tls_dir, name),
                read_password(attacker_pg_passwords_dir, pg_role(name)),
            )
            for name in attacker or ["product"]
        ]
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    try:
        outcomes = asyncio.run(
            run_attacks(where, attackers, Identity(verifier_tls_dir, "operator"))
        )
    except Exception as error:  # the verifier could not read: nothing was proven
        print(
            "trust attack: the operator could not read the data, so nothing was tried to the end;"
            " is the stack up (`make run`)?",
            file=sys.stderr,
        )
        fail("attack", error)
    typer.echo(report(outcomes))
    if not all(o.held for o in outcomes):
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
