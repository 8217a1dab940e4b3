"""The public signing keys as a JWK Set (RFC 7517) in etcd, and a watch that follows it.

The user service owns the signing keys and writes their public halves to
``/config/auth/jwks``; every verifier lists that key once, then watches it from
the next revision, replacing its key set on each PUT. A broken watch (etcd
restart, compaction) keeps the current set and resyncs, the way the service
directory does for /services/. Until a document appears the set is empty, so
every token is refused as signed by an unknown key; start-up never waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Iterable
from typing import Any

import aetcd
from aetcd import rtypes
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from jwt.algorithms import RSAAlgorithm

from shared.auth.keys import key_id
from shared.registry.watch import KeyRangeFollower, single_key_range

log = logging.getLogger(__name__)

JWKS_KEY = "/config/auth/jwks"
ALGORITHM = "RS256"

PublicKeys = dict[str, RSAPublicKey]  # kid -> key


def jwk(public_key: RSAPublicKey) -> dict[str, Any]:
    """One public key as a JWK: kty, n, e, plus kid, alg and use."""
    encoded: dict[str, Any] = RSAAlgorithm.to_jwk(public_key, as_dict=True)
    return {**encoded, "kid": key_id(public_key), "alg": ALGORITHM, "use": "sig"}


def jwks_document(public_keys: Iterable[RSAPublicKey]) -> bytes:
    """The JWK Set of these keys, in the order given, as etcd stores it."""
    return json.dumps({"keys": [jwk(k) for k in public_keys]}, sort_keys=True).encode()


def parse_jwks(raw: bytes) -> PublicKeys:
    """kid -> public key. ValueError for a document that is not a JWK Set.

    Entries this system cannot use (another key type or algorithm, no kid, not
    for signatures, a private key that should never have been published) are
    skipped with a warning rather than failing the whole set.
    """
    try:
        document = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"JWKS is not JSON: {exc}") from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ValueError("JWKS has no 'keys' list")
    keys: PublicKeys = {}
    for entry in entries:
        if not isinstance(entry, dict):
            log.warning("JWKS entry is not an object; skipped")
            continue
        kid = entry.get("kid")
        usable = (
            isinstance(kid, str)
            and bool(kid)
            and entry.get("kty") == "RSA"
            and entry.get("alg", ALGORITHM) == ALGORITHM
            and entry.get("use", "sig") == "sig"
            and "d" not in entry
        )
        if not usable:
            log.warning("JWKS entry %r is not an RS256 public signing key; skipped", kid)
            continue
        try:
            key = RSAAlgorithm.from_jwk(entry)
        except Exception as exc:  # PyJWT raises InvalidKeyError, binascii errors, ...
            log.warning("JWKS entry %r is malformed (%s); skipped", kid, exc)
            continue
        if isinstance(key, RSAPublicKey):
            keys[str(kid)] = key
    return keys


async def publish_jwks(client: aetcd.Client, public_keys: Iterable[RSAPublicKey]) -> bytes:
    """Writes the document (no lease: it outlives every instance); returns what was written."""
    document = jwks_document(public_keys)
    await client.put(JWKS_KEY.encode(), document)
    return document


async def read_jwks(client: aetcd.Client) -> bytes | None:
    found = await client.get(JWKS_KEY.encode())
    return None if found is None else bytes(found.value)


class JwksWatcher:
    """Keeps ``on_change`` fed with the current key set from etcd."""

    def __init__(
        self,
        client: aetcd.Client,
        on_change: Callable[[PublicKeys], None],
        *,
        key: str = JWKS_KEY,
        resync_delay: float = 0.5,
    ) -> None:
        self._on_change = on_change
        self._key = key
        self._follower = KeyRangeFollower(
            client,
            single_key_range(key.encode()),
            name="jwks watch",
            on_listing=self._on_listing,
            on_event=self._on_event,
            resync_delay=resync_delay,
        )
        self.keys: PublicKeys = {}
        self.updates = 0  # how many times on_change was called

    async def start(self, wait_seconds: float = 2.0) -> None:
        """Starts watching; waits up to ``wait_seconds`` for the first listing of etcd
        (not for a document: an absent one just means no key yet)."""
        self._follower.start()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_seconds):
                await self._follower.listed.wait()

    async def stop(self) -> None:
        await self._follower.stop()

    def _apply(self, keys: PublicKeys) -> None:
        if keys.keys() != self.keys.keys() or self.updates == 0:
            log.info("token signing keys now: %s", ", ".join(sorted(keys)) or "none")
        self.keys = keys
        self.updates += 1
        self._on_change(keys)

    def _apply_raw(self, raw: bytes | None) -> None:
        if raw is None:
            self._apply({})
            return
        try:
            keys = parse_jwks(raw)
        except ValueError as exc:
            # Stale beats wrong: keep the last good set until a valid document comes.
            log.error("ignoring the JWKS at %s: %s", self._key, exc)
            if self.updates == 0:
                self._apply({})
            return
        self._apply(keys)

    async def _on_listing(self, listing: rtypes.GetRange) -> None:
        self._apply_raw(bytes(listing[0].value) if listing else None)

    async def _on_event(self, event: rtypes.Event) -> None:
        if event.kind == rtypes.EventKind.PUT:
            self._apply_raw(bytes(event.kv.value))
        elif event.kind == rtypes.EventKind.DELETE:
            self._apply_raw(None)
