"""The user service's token signing keys: kept in its database, published to etcd.

Every user instance runs one keyring. The private keys live in the service's
own table ``signing_keys`` (so replicas share them); their public halves go to
``/config/auth/jwks`` as a JWK Set, which every verifier watches. The rules
(which key signs, which are published, when a retired key goes) are
``SigningKeyPolicy`` in domain.py; this module does the I/O around them (it is
the ``SigningKeys`` port of use_cases.py):

- start: on an empty table, import the bootstrap key file (``jwt_private_key_file``)
  or generate a key; then publish, and sign with the newest key.
- rotate: add a key, retire the rest, publish, sign with the new key.
- maintain (a ``PeriodicTask`` in every instance, and whenever the JWKS changes):
  delete the keys whose last token has expired, re-publish if etcd differs from
  the table, and switch to the newest key if another instance rotated.

Every change and the publish after it happen under one PostgreSQL advisory
lock, so instances doing this at once are harmless and the last document
written always matches the committed table.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aetcd
import jwt
from aetcd.exceptions import ClientError
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from services.user.domain import (
    SigningKey,
    SigningKeyPolicy,
    SigningKeyStatus,
    new_signing_key,
    signing_key_from_pem,
)
from services.user.ports import UnitOfWorkFactory, UserUnitOfWork
from shared.auth.identity import Role
from shared.auth.jwks import JwksWatcher, jwks_document, publish_jwks, read_jwks
from shared.auth.tokens import ALGORITHM, LOGIN_CLIENT, TokenIssuer
from shared.errors import Unavailable
from shared.tasks import PeriodicTask

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
# A removal check woken by its deadline runs just after it, not just before.
_DEADLINE_SLACK_SECONDS = 0.05


def _utc_now() -> datetime:
    return datetime.now(UTC)


class SigningKeyring:
    def __init__(
        self,
        unit_of_work: UnitOfWorkFactory,
        etcd: aetcd.Client,
        policy: SigningKeyPolicy,
        *,
        issuer: str,
        audience: str,
        bootstrap_key_file: Path | None = None,
        clock: Clock = _utc_now,
    ) -> None:
        self._uow = unit_of_work
        self._etcd = etcd
        self.policy = policy
        self._issuer_name = issuer
        self._audience = audience
        self._bootstrap_key_file = bootstrap_key_file
        self._clock = clock
        self._private_keys: dict[str, RSAPrivateKey] = {}  # parsed once per kid
        self._signer: TokenIssuer | None = None
        self.signing_kid: str | None = None
        self._task = PeriodicTask(
            "signing key maintenance", self.maintain, interval=policy.check_interval_seconds
        )
        # Another instance rotated or removed a key: look at the table again now.
        self._watch = JwksWatcher(etcd, lambda _keys: self._task.wake())

    async def start(self) -> None:
        """Bootstraps and publishes before returning, so this instance can sign at once."""
        await self.maintain()
        self._task.start()
        await self._watch.start()

    async def stop(self) -> None:
        await self._watch.stop()
        await self._task.stop()

    def issue(
        self,
        user_id: uuid.UUID,
        role: Role,
        *,
        scopes: Iterable[str] | None = None,
        client_id: str = LOGIN_CLIENT,
        ttl: timedelta | None = None,
    ) -> tuple[str, datetime]:
        """Signs with the newest key (a TokenSigner, as Login and the OAuth2 server want)."""
        if self._signer is None:
            raise Unavailable("the signing keys are not loaded yet")
        return self._signer.issue(user_id, role, scopes=scopes, client_id=client_id, ttl=ttl)

    def sign(self, claims: Mapping[str, Any]) -> str:
        """Any claims (an OpenID Connect ID token) as a JWT signed by the newest key."""
        key = self._private_keys.get(self.signing_kid or "")
        if key is None:
            raise Unavailable("the signing keys are not loaded yet")
        headers = {"kid": self.signing_kid}
        return jwt.encode(dict(claims), key, ALGORITHM, headers=headers)

    async def statuses(self) -> list[SigningKeyStatus]:
        async with self._uow() as uow:
            keys = await uow.signing_keys.all()
        return self.policy.describe(keys, self._clock())

    async def rotate(self) -> list[SigningKeyStatus]:
        """Adds a key that signs from now on; the others are retired, still published."""
        fresh = await asyncio.to_thread(new_signing_key, self._clock())
        async with self._uow() as uow:
            await uow.signing_keys.lock()
            keys = await uow.signing_keys.all()
            now = self._clock()
            new_key, retired = self.policy.rotate(keys, fresh, now)
            await uow.signing_keys.add(new_key)
            await uow.signing_keys.retire([k.kid for k in retired], now)
            keys = await uow.signing_keys.all()
            # Published before commit: verifiers hear of the key before any instance
            # (this one included) can read it from the table and sign with it.
            await self._publish(keys, now)
        self._use(keys)
        log.info(
            "rotated the signing key: %s signs, %s retired",
            new_key.kid,
            ", ".join(k.kid for k in retired) or "none",
        )
        self._task.wake()
        return self.policy.describe(keys, now)

    async def maintain(self) -> float | None:
        """One round: removals due, publish if needed, newest key signs.

        Returns the seconds until the next removal falls due (None if none is pending),
        which the periodic task uses to wake up in time.
        """
        async with self._uow() as uow:
            await uow.signing_keys.lock()
            keys = await uow.signing_keys.all()
            now = self._clock()
            if not keys:
                keys = [await self._bootstrap(uow, now)]
            due = self.policy.due_for_removal(keys, now)
            if due:
                await uow.signing_keys.remove([k.kid for k in due])
                keys = [k for k in keys if k not in due]
                log.info(
                    "removed signing keys %s: their last tokens have expired",
                    ", ".join(k.kid for k in due),
                )
            await self._publish(keys, now)
        self._use(keys)
        next_removal = self.policy.next_removal(keys, now)
        if next_removal is None:
            return None
        return (next_removal - self._clock()).total_seconds() + _DEADLINE_SLACK_SECONDS

    async def _bootstrap(self, uow: UserUnitOfWork, now: datetime) -> SigningKey:
        """The first key (called under the lock, with the table empty)."""
        path = self._bootstrap_key_file
        if path is not None and path.exists():
            key = signing_key_from_pem(path.read_bytes(), now)
            how = f"imported from {path}"
        else:
            key = await asyncio.to_thread(new_signing_key, now)
            how = "generated" + (f" ({path} does not exist)" if path is not None else "")
        await uow.signing_keys.add(key)
        log.info("first signing key %s %s", key.kid, how)
        return key

    async def _publish(self, keys: Sequence[SigningKey], now: datetime) -> None:
        published = self.policy.published(keys, now)
        public_keys = [self._private_key(k).public_key() for k in published]
        try:
            if await read_jwks(self._etcd) == jwks_document(public_keys):
                return
            await publish_jwks(self._etcd, public_keys)
        except (ClientError, OSError) as exc:
            raise Unavailable(f"could not publish the signing keys to etcd ({exc})") from None
        log.info("published JWKS: %s", ", ".join(k.kid for k in published))

    def _private_key(self, key: SigningKey) -> RSAPrivateKey:
        parsed = self._private_keys.get(key.kid)
        if parsed is None:
            parsed = self._private_keys[key.kid] = key.private_key()
        return parsed

    def _use(self, keys: Sequence[SigningKey]) -> None:
        signing = self.policy.signing_key(keys)
        live = {k.kid for k in keys}
        self._private_keys = {kid: k for kid, k in self._private_keys.items() if kid in live}
        if signing.kid == self.signing_kid:
            return
        self._signer = TokenIssuer(
            self._private_key(signing),
            issuer=self._issuer_name,
            audience=self._audience,
            ttl=self.policy.token_ttl,
        )
        if self.signing_kid is not None:
            log.info("now signing with key %s (was %s)", signing.kid, self.signing_kid)
        self.signing_kid = signing.kid
