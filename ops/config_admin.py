"""The config center for people and tools: `shopctl config ...`, the defaults seeder.

``python -m ops.config_admin seed`` writes the committed default documents
(deploy/config/defaults.json) for every scope that has none yet: `make run` runs it, and
so does the Kubernetes config Job. It never overwrites a document someone set.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import aetcd
import typer

from services.order.knobs import OrderKnobs
from services.payment.knobs import PaymentKnobs
from shared.config import store
from shared.config.models import ConfigScopes, ServiceKnobs
from shared.registry.etcd import etcd_client
from shared.settings import DEV_TLS_DIR
from shared.tls import ClientTLS

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULTS_FILE = REPO_ROOT / "deploy" / "config" / "defaults.json"
# Every document of the config center and its model: each service declares its own
# (ServiceDefinition.knobs); the kit knows none of them, the tools that write know all.
SCOPES = ConfigScopes(
    {
        "user": ServiceKnobs,
        "product": ServiceKnobs,
        "inventory": ServiceKnobs,
        "payment": PaymentKnobs,
        "order": OrderKnobs,
    }
)


def load_defaults(path: Path = DEFAULTS_FILE) -> dict[str, dict[str, Any]]:
    documents = json.loads(path.read_text())
    if not isinstance(documents, dict) or set(documents) - set(SCOPES):
        raise store.InvalidDocument(f"{path}: an object of scopes ({', '.join(SCOPES)})")
    for scope, document in documents.items():
        store.check_document(SCOPES, scope, document)
    return documents


async def seed_defaults(
    client: aetcd.Client, documents: Mapping[str, dict[str, Any]]
) -> dict[str, str]:
    """scope -> "written at <rev>" or "kept <rev>" (a document was there already)."""
    outcome = {}
    for scope, document in documents.items():
        try:
            revision = await store.write(
                client, SCOPES, scope, document, expected_revision=0, author="defaults"
            )
            outcome[scope] = f"written at {revision}"
        except store.ConfigConflict as conflict:
            outcome[scope] = f"kept {conflict.actual}"
    return outcome


async def wait_applied(
    client: aetcd.Client, scope: str, revision: int, timeout: float
) -> tuple[list[store.InstanceStatus], float]:
    """Until every instance that follows ``scope`` applied ``revision``; (them, seconds)."""
    started = time.monotonic()
    while True:
        concerned = [
            s for s in await store.statuses(client) if scope == "global" or s.service == scope
        ]
        if concerned and all(s.revisions.get(scope, 0) >= revision for s in concerned):
            return concerned, time.monotonic() - started
        if time.monotonic() - started > timeout:
            late = [s.instance_id for s in concerned if s.revisions.get(scope, 0) < revision]
            raise TimeoutError(f"not applied within {timeout:g}s by: {', '.join(late) or 'none'}")
        await asyncio.sleep(0.05)


def main(
    etcd: Annotated[str, typer.Option(envvar="SHOP_ETCD_ENDPOINT")] = "127.0.0.1:12379",
    defaults: Annotated[Path, typer.Option(help="the default documents")] = DEFAULTS_FILE,
    tls_dir: Annotated[
        Path,
        typer.Option(envvar="SHOP_TLS_DIR", help="ca.pem and the operator's certificate"),
    ] = DEV_TLS_DIR,
) -> None:
    """Write the default config documents for every scope that has none yet."""

    async def go() -> dict[str, str]:
        # The operator: the one party etcd lets write config documents.
        client = etcd_client(etcd, tls=ClientTLS.operator(tls_dir))
        try:
            return await seed_defaults(client, load_defaults(defaults))
        finally:
            await client.close()

    try:
        outcome = asyncio.run(go())
    except (store.InvalidDocument, OSError, json.JSONDecodeError) as error:
        print(f"config seed: FAILED: {error}", file=sys.stderr)
        raise typer.Exit(1) from None
    except aetcd.exceptions.ClientError as error:  # refused (no right) or unreachable
        print(f"config seed: FAILED: etcd: {error}", file=sys.stderr)
        raise typer.Exit(1) from None
    print("config seed: " + ", ".join(f"{scope} {what}" for scope, what in outcome.items()))


if __name__ == "__main__":
    typer.run(main)
