"""etcd itself refuses whoever is not entitled (ops/trust/rights.py), and data stays put.

Every refusal here is etcd's answer at the server: the TLS handshake it fails, or its
"permission denied" for an authenticated user without the right. Each test then reads
the key as the operator to show nothing changed.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from aetcd import rpc
from aetcd.exceptions import ClientError

from devstack.stack import Stack
from ops.trust.etcd_auth import apply_at
from pki.authority import ensure_authority
from pki.identities import ETCD_ROOT, KAFKA, PROMETHEUS_TARGETS
from shared.auth.jwks import JWKS_KEY, publish_jwks
from shared.config.center import config_key, status_key
from shared.registry.etcd import SERVER_NAME, EtcdClient, etcd_client, instance_key
from shared.tls import GATEWAY, OPERATOR, ClientTLS, ca_file, cert_file, key_file
from tests.support.tokens import TestKeys

pytestmark = pytest.mark.integration
DENIED = "etcdserver: permission denied"


def as_party(stack: Stack, name: str) -> EtcdClient:
    return etcd_client(stack.etcd_endpoint, tls=ClientTLS(stack.tls_dir, name), timeout=3)


@pytest_asyncio.fixture(loop_scope="session")
async def operator(stack: Stack) -> AsyncIterator[EtcdClient]:
    client = as_party(stack, OPERATOR)
    yield client
    await client.close()


@pytest_asyncio.fixture(loop_scope="session")
async def party(stack: Stack, request: pytest.FixtureRequest) -> AsyncIterator[EtcdClient]:
    client = as_party(stack, request.param)
    yield client
    await client.close()


async def value_of(client: EtcdClient, key: str) -> bytes | None:
    found = await client.get(key.encode())
    return None if found is None else bytes(found.value)


async def denied(call: Awaitable[object]) -> str:
    with pytest.raises(ClientError) as refusal:
        await call
    return str(refusal.value)


@pytest_asyncio.fixture(loop_scope="session")
async def document(operator: EtcdClient) -> AsyncIterator[tuple[str, bytes]]:
    """A config document of a scope of its own, written by the operator (who may)."""
    key = config_key(f"trust-{uuid.uuid4().hex[:8]}")
    original = b'{"log_level": "INFO"}'
    await operator.put(key.encode(), original)
    yield key, original
    await operator.delete(key.encode())


# --- refused before any user exists: the TLS handshake --------------------------------------


async def raw_put(stack: Stack, credentials: grpc.ChannelCredentials | None) -> grpc.StatusCode:
    """One Put on a bare channel (None: plaintext); the code etcd's answer ended with."""
    if credentials is None:
        channel = grpc.aio.insecure_channel(stack.etcd_endpoint)
    else:
        options = [("grpc.ssl_target_name_override", SERVER_NAME)]
        channel = grpc.aio.secure_channel(stack.etcd_endpoint, credentials, options=options)
    try:
        await rpc.KVStub(channel).Put(rpc.PutRequest(key=b"/trust-probe", value=b"x"), timeout=3)
    except grpc.aio.AioRpcError as error:
        return error.code()
    finally:
        await channel.close(None)
    return grpc.StatusCode.OK


def foreign_credentials(stack: Stack, tmp_path: Path) -> grpc.ChannelCredentials:
    """Trusts our CA (so the client accepts etcd) but presents another CA's certificate."""
    ensure_authority(tmp_path, [OPERATOR])
    return grpc.ssl_channel_credentials(
        ca_file(stack.tls_dir).read_bytes(),
        private_key=key_file(tmp_path, OPERATOR).read_bytes(),
        certificate_chain=cert_file(tmp_path, OPERATOR).read_bytes(),
    )


@pytest.mark.parametrize("client", ["plaintext", "tls-without-certificate", "foreign-ca"])
async def test_a_client_without_a_certificate_of_our_ca_is_refused(
    stack: Stack, operator: EtcdClient, tmp_path: Path, client: str
) -> None:
    credentials = None  # plaintext
    if client == "tls-without-certificate":
        credentials = grpc.ssl_channel_credentials(ca_file(stack.tls_dir).read_bytes())
    elif client == "foreign-ca":
        credentials = foreign_credentials(stack, tmp_path)
    # etcd ends the handshake (its log: "tls: first record does not look like a TLS
    # handshake", "client didn't provide a certificate", "bad certificate").
    assert await raw_put(stack, credentials) == grpc.StatusCode.UNAVAILABLE
    root = as_party(stack, ETCD_ROOT)  # the probe key is nobody's but root's to read
    try:
        assert await value_of(root, "/trust-probe") is None
    finally:
        await root.close()


@pytest.mark.parametrize("party", [KAFKA], indirect=True)
async def test_a_certificate_of_our_ca_that_is_no_etcd_user_is_refused(
    party: EtcdClient, operator: EtcdClient, document: tuple[str, bytes]
) -> None:
    key, original = document
    # etcd finds no user of that name (its log says so) and answers as for any refusal.
    assert await denied(party.put(key.encode(), b"{}")) == DENIED
    assert await value_of(operator, key) == original


# --- authenticated, but without the right ---------------------------------------------------


@pytest.mark.parametrize("party", ["product", GATEWAY, OPERATOR], indirect=True)
async def test_only_the_user_service_may_write_the_jwks(
    party: EtcdClient, operator: EtcdClient
) -> None:
    before = await value_of(operator, JWKS_KEY)
    assert await denied(party.put(JWKS_KEY.encode(), b'{"keys": []}')) == DENIED
    assert await denied(party.delete(JWKS_KEY.encode())) == DENIED
    assert await value_of(operator, JWKS_KEY) == before


@pytest.mark.parametrize("party", ["user"], indirect=True)
async def test_the_user_service_writes_the_jwks(
    party: EtcdClient, operator: EtcdClient, keys: TestKeys
) -> None:
    # The test key, as the other tests' services expect it (tests/support/tokens.py).
    document = await publish_jwks(party, [keys.public_key])
    assert await value_of(operator, JWKS_KEY) == document


@pytest.mark.parametrize("party", ["product", "user", GATEWAY, PROMETHEUS_TARGETS], indirect=True)
async def test_a_service_cannot_write_config(
    party: EtcdClient, operator: EtcdClient, document: tuple[str, bytes]
) -> None:
    key, original = document
    assert await denied(party.put(key.encode(), b'{"log_level": "DEBUG"}')) == DENIED
    assert await denied(party.delete(key.encode())) == DENIED
    assert await value_of(operator, key) == original


async def test_the_operator_writes_config(operator: EtcdClient) -> None:
    key = config_key(f"trust-{uuid.uuid4().hex[:8]}")
    try:
        await operator.put(key.encode(), b'{"log_level": "DEBUG"}')
        assert await value_of(operator, key) == b'{"log_level": "DEBUG"}'
    finally:
        await operator.delete(key.encode())


@pytest.mark.parametrize("party", ["product"], indirect=True)
async def test_a_service_writes_only_its_own_registrations(
    party: EtcdClient, operator: EtcdClient
) -> None:
    own = instance_key("product", f"trust-{uuid.uuid4().hex[:8]}")
    other = instance_key("order", f"trust-{uuid.uuid4().hex[:8]}")
    await party.put(own.encode(), b'{"address": "127.0.0.1:1"}')
    try:
        assert await denied(party.put(other.encode(), b'{"address": "127.0.0.1:1"}')) == DENIED
        assert await value_of(operator, other) is None
        assert await value_of(party, own) is not None  # and it discovers the registry
    finally:
        await party.delete(own.encode())


@pytest.mark.parametrize("party", [GATEWAY], indirect=True)
async def test_the_gateway_registers_itself_and_reads_the_registry_config_and_jwks(
    stack: Stack, party: EtcdClient, operator: EtcdClient, keys: TestKeys
) -> None:
    own = instance_key(GATEWAY, f"trust-{uuid.uuid4().hex[:8]}")
    status = status_key(GATEWAY, f"trust-{uuid.uuid4().hex[:8]}")
    forged = instance_key("order", f"trust-{uuid.uuid4().hex[:8]}")
    user = as_party(stack, "user")
    try:
        await party.put(own.encode(), b'{"address": "127.0.0.1:1"}')
        await party.put(status.encode(), b'{"revision": 1}')
        assert own.encode() in [bytes(kv.key) for kv in await party.get_prefix(b"/services/")]
        # The JWKS, which it verifies the storefront's tokens with.
        document = await publish_jwks(user, [keys.public_key])
        assert await value_of(party, JWKS_KEY) == document
        # It cannot pass itself off as a service, nor speak for another party's status.
        assert await denied(party.put(forged.encode(), b'{"address": "127.0.0.1:1"}')) == DENIED
        assert await value_of(operator, forged) is None
        other_status = status_key("order", "forged")
        assert await denied(party.put(other_status.encode(), b"{}")) == DENIED
        assert await denied(party.get(b"/config-history/global/1")) == DENIED
    finally:
        await party.delete(own.encode())
        await party.delete(status.encode())
        await user.close()


@pytest.mark.parametrize("party", [PROMETHEUS_TARGETS], indirect=True)
async def test_prometheus_targets_reads_the_registry_and_writes_nothing(
    stack: Stack, party: EtcdClient, operator: EtcdClient
) -> None:
    own = instance_key("product", f"trust-{uuid.uuid4().hex[:8]}")
    product = as_party(stack, "product")
    try:
        await product.put(own.encode(), b'{"address": "127.0.0.1:1"}')
        assert own.encode() in [bytes(kv.key) for kv in await party.get_prefix(b"/services/")]
        assert await denied(party.put(own.encode(), b"{}")) == DENIED
        assert await denied(party.delete(own.encode())) == DENIED
        assert await value_of(operator, own) == b'{"address": "127.0.0.1:1"}'
        assert await denied(party.get(JWKS_KEY.encode())) == DENIED  # reads nothing else
    finally:
        await product.delete(own.encode())
        await product.close()


# --- the rights are etcd's, re-applied on every start -----------------------------------------


async def test_a_right_added_by_hand_is_revoked_by_the_next_apply(
    stack: Stack, operator: EtcdClient, document: tuple[str, bytes]
) -> None:
    key, original = document
    root = as_party(stack, ETCD_ROOT)
    product = as_party(stack, "product")
    try:
        await root.connect()
        perm = rpc.Permission(
            key=b"/config/", range_end=b"/config0", permType=rpc.Permission.READWRITE
        )
        await rpc.AuthStub(root.channel).RoleGrantPermission(
            rpc.AuthRoleGrantPermissionRequest(name="product", perm=perm), timeout=3
        )
        await product.put(key.encode(), b"{}")  # the stray right works ...
        await operator.put(key.encode(), original)
        report = await apply_at(stack.etcd_endpoint, stack.tls_dir)
        assert any(change.startswith("role product") for change in report.changes)
        assert await denied(product.put(key.encode(), b"{}")) == DENIED  # ... until re-applied
        assert await value_of(operator, key) == original
        assert not (await apply_at(stack.etcd_endpoint, stack.tls_dir)).changes
    finally:
        await apply_at(stack.etcd_endpoint, stack.tls_dir)
        await product.close()
        await root.close()
