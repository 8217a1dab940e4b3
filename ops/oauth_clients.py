"""The OAuth2 clients the user service's authorization server knows, and their secrets.

The user service reads them from a JSON file (``SHOP_USER_OAUTH_CLIENTS_FILE``): one
object per client, a confidential client's secret in a file of its own that the object
names (``secret_file``), a public client (the command line's, which runs on a person's
machine and can keep no secret) with none; ``first_party`` marks the project's own
storefront, whose users are asked no consent. The gateway logs in to it as ``storefront``
with the same secret file (``SHOP_GATEWAY_OAUTH_CLIENT_SECRET_FILE``).

The secrets are made once per stack (``secrets.token_urlsafe(32)``), one file each, 0600
in a 0700 folder, like PostgreSQL's passwords (ops/trust/postgres_roles.py): a local
stack's under ``.stack/<profile>/secrets/oauth/``, the cluster's under
``.stack/k8s/oauth/`` (then a Secret); never committed, never logged. The clients file
holds no secret, only where each one is: it is written again whenever the storefront's
public URL (its redirect URI) may have changed.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from ops.secret_files import ensure_secret_file, private_dir
from shared.auth import scopes

STOREFRONT: Final = "storefront"
LOADGEN: Final = "loadgen"
SHOP_CLI: Final = "shop-cli"
# Where the gateway takes the authorization code back (SHOP_GATEWAY_PUBLIC_URL + this).
CALLBACK_PATH: Final = "/auth/callback"
# The command line's loopback redirect (RFC 8252 §7.3): it listens there while you log in.
CLI_REDIRECT: Final = "http://127.0.0.1:8976/callback"

AUTHORIZATION_CODE: Final = "authorization_code"
REFRESH_TOKEN: Final = "refresh_token"
CLIENT_CREDENTIALS: Final = "client_credentials"

_PERSON = (scopes.OPENID, scopes.PROFILE, scopes.EMAIL)
_CUSTOMER = (
    scopes.CATALOG_READ,
    scopes.ORDERS_READ,
    scopes.ORDERS_WRITE,
    scopes.WALLET_READ,
    scopes.WALLET_WRITE,
)
_ADMIN = (scopes.CATALOG_ADMIN, scopes.STOCK_ADMIN)


@dataclass(frozen=True)
class OAuthClient:
    client_id: str
    name: str
    grant_types: tuple[str, ...]
    scopes: tuple[str, ...]
    redirect_uris: tuple[str, ...] = ()
    # A confidential client proves itself with its secret; a public one cannot keep one.
    confidential: bool = True
    # The project's own storefront: the authorization server asks no consent of a person
    # signing in to it (a third party's app, or the command line, is asked).
    first_party: bool = False


def oauth_clients(public_url: str) -> tuple[OAuthClient, ...]:
    """Every client, the storefront's redirect URI on ``public_url`` (the gateway's origin).

    The storefront may ask for whatever a person may hold (an admin's page needs the admin
    scopes; a customer is granted only the customer's): it is the person's own session.
    It also has the client credentials grant: the gateway's own token, which the public
    pages (the catalog) call the services with for a visitor who has not signed in, since
    no service takes a call without a token (gateway/oauth_proxy.py). A machine's token
    never holds more than a customer's scopes (the authorization server caps it).
    The load generator is a machine too (shared/auth/scopes.py).
    """
    return (
        OAuthClient(
            STOREFRONT,
            "Storefront",
            (AUTHORIZATION_CODE, REFRESH_TOKEN, CLIENT_CREDENTIALS),
            (*_PERSON, *_CUSTOMER, *_ADMIN),
            (public_url.rstrip("/") + CALLBACK_PATH,),
            first_party=True,
        ),
        OAuthClient(LOADGEN, "Load generator", (CLIENT_CREDENTIALS,), _CUSTOMER),
        OAuthClient(
            SHOP_CLI,
            "shop command line",
            (AUTHORIZATION_CODE, REFRESH_TOKEN),
            (*_PERSON, *_CUSTOMER),
            (CLI_REDIRECT,),
            confidential=False,
        ),
    )


def confidential_ids(clients: Iterable[OAuthClient]) -> list[str]:
    return [c.client_id for c in clients if c.confidential]


# --- secrets ---------------------------------------------------------------------------------


def secret_file(secrets_dir: Path, client_id: str) -> Path:
    return secrets_dir / client_id


def ensure_client_secrets(secrets_dir: Path, client_ids: Iterable[str]) -> dict[str, Path]:
    """Each client's secret file, made if missing (0600 in a 0700 folder); never changed."""
    private_dir(secrets_dir)
    files = {}
    for client_id in client_ids:
        path = secret_file(secrets_dir, client_id)
        # No newline: the file is the plain secret, byte for byte (a Secret's key).
        ensure_secret_file(path, lambda: secrets.token_urlsafe(32))
        read_client_secret(secrets_dir, client_id)  # not empty
        files[client_id] = path
    return files


def read_client_secret(secrets_dir: Path, client_id: str) -> str:
    path = secret_file(secrets_dir, client_id)
    try:
        secret = path.read_text().strip()
    except FileNotFoundError:
        raise ValueError(f"no secret for OAuth client {client_id!r}: {path} is missing") from None
    if not secret:
        raise ValueError(f"the secret file {path} of OAuth client {client_id!r} is empty")
    return secret


# --- the clients file ------------------------------------------------------------------------


def clients_document(
    clients: Sequence[OAuthClient], secret_path: Callable[[str], str]
) -> list[dict[str, Any]]:
    """The file's content; ``secret_path(client_id)``: where the reader finds the secret
    (a path on this machine, or in the pod that mounts it)."""
    document = []
    for client in clients:
        entry: dict[str, Any] = {"client_id": client.client_id, "name": client.name}
        if client.confidential:
            entry["secret_file"] = secret_path(client.client_id)
        entry |= {
            "redirect_uris": list(client.redirect_uris),
            "grant_types": list(client.grant_types),
            "scopes": list(client.scopes),
        }
        if client.first_party:
            entry["first_party"] = True
        document.append(entry)
    return document


def render(document: list[dict[str, Any]]) -> str:
    return json.dumps(document, indent=2) + "\n"


def write_clients_file(
    path: Path, public_url: str, secrets_dir: Path, seen_at: Path | None = None
) -> Path:
    """The clients file at ``path``, the secrets made in ``secrets_dir`` if missing.

    ``seen_at``: the folder the reader finds the secrets in, when not ``secrets_dir``
    itself (a container's or a pod's mount). Written whole, then renamed into place.
    """
    clients = oauth_clients(public_url)
    ensure_client_secrets(secrets_dir, confidential_ids(clients))
    where = seen_at if seen_at is not None else secrets_dir
    text = render(clients_document(clients, lambda c: str(secret_file(where, c))))
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)
    return path
