"""Each service's access policy (``ACCESS`` in its grpc_api.py), and the auth interceptor
enforcing it: the OAuth2 scope a method's token must carry, and the parties (mTLS) that
may call the admin methods. Called directly, with a fake context: no server, no wire."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import grpc
import pytest

from services.inventory.grpc_api import ACCESS as INVENTORY
from services.order.grpc_api import ACCESS as ORDER
from services.payment.grpc_api import ACCESS as PAYMENT
from services.product.grpc_api import ACCESS as PRODUCT
from services.user.grpc_api import ACCESS as USER
from shared.auth import scopes
from shared.auth.identity import Role, current_identity, set_current_identity
from shared.auth.keys import generate_keypair, load_private_key, load_public_key
from shared.auth.tokens import TokenIssuer, TokenVerifier
from shared.errors import PermissionDenied, Unauthenticated
from shared.rpc.interceptors.auth import AccessPolicy, AuthInterceptor
from shared.tls import GATEWAY, OPERATOR
from shop.inventory.v1 import inventory_pb2
from shop.order.v1 import order_pb2
from shop.payment.v1 import payment_pb2
from shop.product.v1 import product_pb2
from shop.user.v1 import user_pb2
from tests.support.tokens import AUDIENCE, ISSUER

# service -> (its policy, its proto module, the gRPC service's full name)
POLICIES: dict[str, tuple[AccessPolicy, Any, str]] = {
    "user": (USER, user_pb2, "shop.user.v1.UserService"),
    "product": (PRODUCT, product_pb2, "shop.product.v1.ProductService"),
    "inventory": (INVENTORY, inventory_pb2, "shop.inventory.v1.InventoryService"),
    "payment": (PAYMENT, payment_pb2, "shop.payment.v1.PaymentService"),
    "order": (ORDER, order_pb2, "shop.order.v1.OrderService"),
}

# Every method that needs a scope, and which. Methods not listed need none (a valid token
# is enough, or they are public): a scope dropped from a policy, or one added, fails here.
SCOPES: dict[str, dict[str, str]] = {
    "user": {},
    "product": {
        "CreateProduct": scopes.CATALOG_ADMIN,
        "UpdateProduct": scopes.CATALOG_ADMIN,
        "GetProduct": scopes.CATALOG_READ,
        "BatchGetProducts": scopes.CATALOG_READ,
        "ListProducts": scopes.CATALOG_READ,
    },
    "inventory": {
        "SetStock": scopes.STOCK_ADMIN,
        "GetStock": scopes.CATALOG_READ,
        "BatchGetStock": scopes.CATALOG_READ,
    },
    "payment": {"TopUp": scopes.WALLET_WRITE, "GetBalance": scopes.WALLET_READ},
    "order": {
        "PlaceOrder": scopes.ORDERS_WRITE,
        "CancelOrder": scopes.ORDERS_WRITE,
        "GetOrder": scopes.ORDERS_READ,
        "ListOrders": scopes.ORDERS_READ,
        "WatchOrder": scopes.ORDERS_READ,
    },
}

# Methods only some parties may call (the rest take any certificate of our CA).
ADMINS = frozenset({OPERATOR, GATEWAY})
PARTIES: dict[str, dict[str, frozenset[str]]] = {
    "user": {
        "RotateSigningKey": frozenset({OPERATOR}),
        "ListSigningKeys": frozenset({OPERATOR}),
    },
    "product": {
        "CreateProduct": ADMINS,
        "UpdateProduct": ADMINS,
        "BatchGetProducts": frozenset({"order", OPERATOR}),
    },
    "inventory": {"SetStock": ADMINS},
    "payment": {},
    "order": {},
}


def methods(service: str) -> list[str]:
    _, module, full_name = POLICIES[service]
    descriptor = module.DESCRIPTOR.services_by_name[full_name.rsplit(".", 1)[1]]
    return [m.name for m in descriptor.methods]


def path(service: str, method: str) -> str:
    return f"/{POLICIES[service][2]}/{method}"


@pytest.mark.parametrize("service", sorted(POLICIES))
def test_each_policy_asks_exactly_these_scopes(service: str) -> None:
    policy = POLICIES[service][0]
    assert set(SCOPES[service]) <= set(methods(service)), "a scope for a method the proto lacks"
    asked = {m: s for m in methods(service) if (s := policy.scope_for(path(service, m)))}
    assert asked == SCOPES[service]


@pytest.mark.parametrize("service", sorted(POLICIES))
def test_each_policy_admits_exactly_these_parties(service: str) -> None:
    policy = POLICIES[service][0]
    limited = {
        m: parties for m in methods(service) if (parties := policy.parties_for(path(service, m)))
    }
    assert limited == PARTIES[service]


def test_every_scope_a_method_asks_is_one_a_person_can_hold() -> None:
    asked = {scope for table in SCOPES.values() for scope in table.values()}
    assert asked <= scopes.ADMIN_SCOPES
    # What the customer and the admin can each be granted is exactly what the methods ask.
    assert asked == scopes.ADMIN_SCOPES


# --- the interceptor ---------------------------------------------------------------------


class Context:
    """What AuthInterceptor.admit reads of a call: the peer's certificate, the metadata."""

    def __init__(self, party: str | None, token: str | None) -> None:
        self._party = party
        self._token = token

    def auth_context(self) -> dict[str, list[bytes]]:
        if self._party is None:
            return {}
        return {"transport_security_type": [b"ssl"], "peer_dns": [self._party.encode()]}

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return () if self._token is None else (("authorization", f"Bearer {self._token}"),)


def context(party: str | None, token: str | None) -> grpc.aio.ServicerContext[Any, Any]:
    return cast(grpc.aio.ServicerContext[Any, Any], Context(party, token))


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("keys")
    generate_keypair(directory)
    return directory


@pytest.fixture(autouse=True)
def no_identity() -> Iterator[None]:
    set_current_identity(None)
    yield
    set_current_identity(None)


def token(key_dir: Path, role: Role = Role.CUSTOMER, granted: Iterable[str] | None = None) -> str:
    issuer = TokenIssuer(
        load_private_key(key_dir / "private.pem"), ISSUER, AUDIENCE, timedelta(minutes=5)
    )
    return issuer.issue(uuid.uuid4(), role, scopes=granted, client_id="test")[0]


def interceptor(key_dir: Path, policy: AccessPolicy) -> AuthInterceptor:
    verifier = TokenVerifier([load_public_key(key_dir / "public.pem")], ISSUER, AUDIENCE)
    return AuthInterceptor(verifier, policy)


@pytest.mark.parametrize(
    ("service", "method", "scope"),
    [(s, m, scope) for s, table in SCOPES.items() for m, scope in table.items()],
)
def test_a_token_without_the_methods_scope_is_refused(
    key_dir: Path, service: str, method: str, scope: str
) -> None:
    auth = interceptor(key_dir, POLICIES[service][0])
    party = OPERATOR  # every method takes the operator; the scope is what is tested
    everything_else = scopes.ALL_SCOPES - {scope}
    narrow = token(key_dir, Role.ADMIN, everything_else)
    with pytest.raises(PermissionDenied, match=f"needs a token with the scope {scope}"):
        auth.admit(path(service, method), context(party, narrow))
    with pytest.raises(Unauthenticated):  # the refused call left no identity behind
        current_identity()
    granted = token(key_dir, Role.ADMIN, [scope])
    auth.admit(path(service, method), context(party, granted))
    identity = current_identity()
    assert identity is not None and identity.scopes == {scope}


def test_a_read_only_client_reads_orders_and_cannot_place_one(key_dir: Path) -> None:
    auth = interceptor(key_dir, ORDER)
    reader = token(key_dir, Role.CUSTOMER, [scopes.ORDERS_READ])
    auth.admit(path("order", "ListOrders"), context("gateway", reader))
    with pytest.raises(PermissionDenied, match="orders:write"):
        auth.admit(path("order", "PlaceOrder"), context("gateway", reader))


def test_a_login_token_holds_every_scope_its_role_needs(key_dir: Path) -> None:
    """What Login issues (no scopes asked: the role's all) passes every method the role
    may call, so the tools and tests that log in keep working."""
    customer, admin = token(key_dir, Role.CUSTOMER), token(key_dir, Role.ADMIN)
    for service, table in SCOPES.items():
        auth = interceptor(key_dir, POLICIES[service][0])
        for method in table:
            auth.admit(path(service, method), context(OPERATOR, admin))
            if method not in ("CreateProduct", "UpdateProduct", "SetStock"):
                auth.admit(path(service, method), context(OPERATOR, customer))


@pytest.mark.parametrize(
    ("service", "method"),
    [("product", "CreateProduct"), ("product", "UpdateProduct"), ("inventory", "SetStock")],
)
def test_the_admin_methods_take_the_gateway_with_an_admins_token(
    key_dir: Path, service: str, method: str
) -> None:
    auth = interceptor(key_dir, POLICIES[service][0])
    admin = token(key_dir, Role.ADMIN)
    auth.admit(path(service, method), context(GATEWAY, admin))
    auth.admit(path(service, method), context(OPERATOR, admin))
    # Another service's certificate is refused before the token is looked at.
    with pytest.raises(PermissionDenied, match="not open to order"):
        auth.admit(path(service, method), context("order", admin))
    # And the gateway cannot make a customer an admin.
    with pytest.raises(PermissionDenied, match="admin role"):
        auth.admit(path(service, method), context(GATEWAY, token(key_dir, Role.CUSTOMER)))


@pytest.mark.parametrize("method", ["RotateSigningKey", "ListSigningKeys"])
def test_the_signing_keys_stay_the_operators(key_dir: Path, method: str) -> None:
    auth = interceptor(key_dir, USER)
    with pytest.raises(PermissionDenied, match="not open to gateway"):
        auth.admit(path("user", method), context(GATEWAY, token(key_dir, Role.ADMIN)))
    auth.admit(path("user", method), context(OPERATOR, token(key_dir, Role.ADMIN)))
