"""Entry point: ``python -m gateway [serve|migrate|openapi]``."""

from __future__ import annotations

import asyncio
import json

import typer

from gateway.app import create_app
from gateway.server import GatewayServer, migrate
from gateway.settings import GatewaySettings
from shared.logs import configure_logging

app = typer.Typer(add_completion=False, help="The API gateway: REST/JSON over the services.")


def _settings_with_database() -> GatewaySettings:
    settings = GatewaySettings()
    try:
        settings.database_dsn()
    except ValueError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=2) from None
    return settings


@app.command("serve")
def serve_command() -> None:
    """Apply pending migrations, then serve HTTP until SIGINT/SIGTERM."""
    settings = _settings_with_database()
    configure_logging(settings.log_level, settings)
    asyncio.run(GatewayServer(settings).serve_until_stopped())


@app.command("migrate")
def migrate_command() -> None:
    """Apply pending migrations and exit (a Kubernetes init container runs this)."""
    settings = _settings_with_database()
    configure_logging(settings.log_level)
    asyncio.run(migrate(settings))


@app.command("openapi")
def openapi_command() -> None:
    """Print the OpenAPI document (`make openapi` writes it to docs/openapi.json)."""
    document = create_app(GatewaySettings()).openapi()
    typer.echo(json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False))


if __name__ == "__main__":
    app()
