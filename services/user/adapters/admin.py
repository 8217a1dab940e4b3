"""The first admin, from the command line:
``python -m services.user.adapters.admin --email ... --password ...``.

A driving adapter, as grpc_api.py is: it opens what the ``ensure_admin`` use case
needs (the schema, a connection) and prints the admin's id. The seeder and the
Kubernetes seed Job run it on every deploy; the use case makes that safe.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import typer

from services.user import use_cases
from services.user.domain import Passwords, new_password, normalise_email
from services.user.persistence import unit_of_work_factory
from services.user.settings import UserSettings
from shared.db.migrations import apply_migrations
from shared.db.pool import create_pool
from shared.errors import DomainError

MIGRATIONS = Path(__file__).parent.parent / "migrations"


async def ensure_admin(dsn: str, email: str, password: str) -> uuid.UUID:
    """The id of the admin with this email: created if absent, promoted if a customer.

    An existing account keeps its password; ``password`` is used only to create one.
    """
    # Bad input is refused before the database is touched.
    email = normalise_email(email)
    password = new_password(password)
    # The seeder may run before the service ever has: the schema must exist.
    await apply_migrations(dsn, MIGRATIONS)
    pool = await create_pool(dsn, min_size=1, max_size=1)
    try:
        # Passwords hashes its decoy on creation: off the event loop, as every hash.
        passwords = await asyncio.to_thread(Passwords)
        return await use_cases.ensure_admin(
            unit_of_work_factory(pool), passwords, email=email, password=password
        )
    finally:
        await pool.close()


app = typer.Typer(add_completion=False, help="Bootstrap the first admin account.")


@app.command()
def main(
    email: str = typer.Option(..., help="The admin's email; created if absent."),
    password: str = typer.Option(..., help="Used only when the account is created."),
) -> None:
    """Create (or promote) the admin account; prints its user id. Reads SHOP_USER_PG_DSN."""
    # No log setup: stdout carries only the id, for scripts.
    settings = UserSettings()
    try:
        user_id = asyncio.run(ensure_admin(settings.database_dsn(), email, password))
    except DomainError as error:
        typer.echo(f"error: {error.message}", err=True)
        raise typer.Exit(code=2) from None
    except ValueError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=2) from None
    typer.echo(str(user_id))


if __name__ == "__main__":
    app()
