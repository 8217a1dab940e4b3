"""certs: the stack's certificate authority from the terminal (pki/ does the work).

python -m devstack.certs show --profile dev
python -m devstack.certs renew product --profile dev  # running parties pick it up, no restart
python -m devstack.certs ensure --profile dev         # what `make run` does at start
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer

from devstack.stack import Stack
from pki import authority, identities
from shared import tls

app = typer.Typer(add_completion=False, help=__doc__)

ProfileOption = Annotated[
    str, typer.Option(help="stack profile: its TLS dir is .stack/<profile>/tls")
]
DirOption = Annotated[
    Path | None, typer.Option("--dir", help="a TLS dir elsewhere (overrides --profile)")
]


def tls_dir(profile: str, directory: Path | None) -> Path:
    return directory if directory is not None else Stack(profile).tls_dir


def describe(path: Path) -> str:
    cert = authority.load_certificate(path)
    left = (cert.not_valid_after_utc - dt.datetime.now(dt.UTC)).days
    return (
        f"{path.name:<16} serial {cert.serial_number:x}  "
        f"until {cert.not_valid_after_utc:%Y-%m-%d} ({left} days)  {cert.subject.rfc4514_string()}"
    )


@app.command()
def ensure(profile: ProfileOption = "dev", directory: DirOption = None) -> None:
    """Create the CA and every certificate that is missing, broken or near its end."""
    where = tls_dir(profile, directory)
    issued = authority.ensure_authority(where)
    typer.echo(f"{where}: {'issued ' + ', '.join(issued) if issued else 'nothing to do'}")


@app.command()
def renew(
    name: Annotated[str, typer.Argument(help=f"one of {', '.join(identities.IDENTITIES)}")],
    profile: ProfileOption = "dev",
    directory: DirOption = None,
) -> None:
    """A fresh key and certificate for NAME, signed by the same CA."""
    if name not in identities.IDENTITIES:
        raise typer.BadParameter(
            f"unknown identity {name!r} (known: {', '.join(identities.IDENTITIES)})"
        )
    where = tls_dir(profile, directory)
    authority.renew(where, name)
    typer.echo(describe(tls.cert_file(where, name)))
    # etcd reads its files on every handshake, the services and clients when they change;
    # Kafka and PostgreSQL have to be asked, so the profile's running servers are.
    stack = Stack(profile)
    if name == identities.KAFKA and directory is None and stack.kafka.is_up():
        stack.kafka.reload_certificate()
        typer.echo("kafka: the running broker reloaded it")
    postgres_up = name == identities.POSTGRES and directory is None and stack.postgres.is_up()
    if postgres_up and stack.postgres.refresh():
        typer.echo("postgres: the running server reloaded it")


@app.command()
def show(profile: ProfileOption = "dev", directory: DirOption = None) -> None:
    """Every certificate in the TLS dir: serial, expiry, subject."""
    where = tls_dir(profile, directory)
    for path in [tls.ca_file(where), *(tls.cert_file(where, n) for n in identities.IDENTITIES)]:
        typer.echo(describe(path) if path.exists() else f"{path.name:<16} missing")


if __name__ == "__main__":
    app()
