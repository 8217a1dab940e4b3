"""Bootstraps the first admin:
``python -m services.user.adapters.admin --email ... --password ...``.

There is no RPC that grants the admin role (an admin would be needed to call
it), so the first one is made here, straight through the service's own domain
and persistence. Safe to run on every deploy: it never duplicates or demotes.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import asyncpg
import typer

from services.user.domain import Passwords, new_password, new_user, normalise_email
from services.user.persistence import UserUnitOfWork
from services.user.settings import UserSettings
from shared.auth.identity import Role
from shared.db.migrations import apply_migrations
from shared.db.pool import create_pool
from shared.errors import AlreadyExists, DomainError

MIGRATIONS = Path(__file__).parent.parent / "migrations"


async def ensure_admin(dsn: str, email: str, password: str) -> uuid.UUID:
    """The id of the admin with this email: created if absent, promoted if a customer.

    An existing account keeps its password; ``password`` is used only to create one.
    """
    email = normalise_email(email)
    password = new_password(password)
    # The seeder may run before the service ever has: the schema must exist.
    await apply_migrations(dsn, MIGRATIONS)
    pool = await create_pool(dsn, min_size=1, max_size=1)
    try:
        existing = await _promote(pool, email)
        if existing is not None:
            return existing
        password_hash = await asyncio.to_thread(Passwords().hash, password)
        admin = new_user(email=email, password_hash=password_hash, role=Role.ADMIN)
        try:
            async with UserUnitOfWork(pool) as uow:
                await uow.users.add(admin)
        except AlreadyExists:
            # Someone registered (or bootstrapped) this email while we hashed.
            raced = await _promote(pool, email)
            if raced is None:
                raise
            return raced
        return admin.user_id
    finally:
        await pool.close()


async def _promote(pool: asyncpg.Pool, email: str) -> uuid.UUID | None:
    async with UserUnitOfWork(pool) as uow:
        user = await uow.users.get_by_email(email, for_update=True)
        if user is None:
            return None
        if user.role is not Role.ADMIN:
            await uow.users.update_role(user.promoted_to_admin())
        return user.user_id


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
