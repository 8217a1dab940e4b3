"""Apply the rights of tools/trust/rights.py to a running server: ``python -m tools.trust``."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated
from urllib.parse import parse_qs, urlsplit

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True)


@app.callback()
def main() -> None:
    """Who may do what below the gRPC ports."""


@app.command()
def postgres(
    dsn: Annotated[
        str, typer.Option(envvar="SHOP_PG_ADMIN_DSN", help="the administrator's DSN")
    ] = "",
    passwords_dir: Annotated[
        Path, typer.Option(help="one file per service role, named after it (shop_<service>)")
    ] = Path("/var/run/secrets/shop/postgres"),
    generate: Annotated[bool, typer.Option(help="create the missing password files")] = False,
) -> None:
    """One role per service, owning its database; CONNECT revoked from everyone else."""
    import asyncpg

    from tools.trust.postgres_roles import apply, ensure_passwords, read_password
    from tools.trust.rights import PG_ROLES

    if not dsn:
        raise typer.BadParameter("no administrator DSN (--dsn or SHOP_PG_ADMIN_DSN)")
    for ca in parse_qs(urlsplit(dsn).query).get("sslrootcert", []):
        if not Path(ca).is_file():
            raise typer.BadParameter(f"the DSN's sslrootcert {ca} is not a file")
    roles = list(PG_ROLES.values())
    try:
        passwords = (
            ensure_passwords(passwords_dir, roles)
            if generate
            else {role: read_password(passwords_dir, role) for role in roles}
        )
        done = asyncio.run(apply(dsn, passwords))
    except (ValueError, OSError, asyncpg.PostgresError) as error:
        reason = str(error)
        if isinstance(error, OSError) and error.filename:
            reason = f"{error.strerror}: {error.filename}"
        print(f"trust postgres: FAILED: {reason}", file=sys.stderr)
        sys.exit(1)
    for line in done or ["nothing to change"]:
        print(f"trust postgres: {line}")


if __name__ == "__main__":
    app()
