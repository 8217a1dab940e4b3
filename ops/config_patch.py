"""A temporary change to a config document (the demos, a bench, a chaos fault), put back
afterwards whatever happens.

``patched_config`` reads ``/config/<scope>`` once; ``set`` writes it with changes
(a compare-and-swap, as `shopctl config set` does) and waits until every instance
following the scope has applied it; leaving the block restores the document read at
the start (or deletes it if there was none), and says so if someone else changed it
meanwhile, rather than overwriting their change.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aetcd

from ops.config_admin import SCOPES, wait_applied
from shared.config import store
from shared.config.center import config_key

APPLY_TIMEOUT = 10.0


def merged(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``changes`` over ``base``; nested objects are merged, not replaced."""
    out = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


class ConfigPatch:
    def __init__(self, client: aetcd.Client, before: store.StoredDocument, author: str) -> None:
        self._client = client
        self.before = before
        self._author = author
        self._revision = before.revision
        self.restored = True  # nothing changed yet

    @property
    def scope(self) -> str:
        return self.before.scope

    async def set(self, changes: dict[str, Any]) -> int:
        """The document read at the start with ``changes``; its revision, once applied."""
        # Against our own last write: a change by someone else in between is a
        # ConfigConflict, never silently overwritten.
        self._revision = await store.write(
            self._client,
            SCOPES,
            self.scope,
            merged(self.before.document, changes),
            expected_revision=self._revision,
            author=self._author,
        )
        self.restored = False
        await wait_applied(self._client, self.scope, self._revision, APPLY_TIMEOUT)
        return self._revision

    async def restore(self) -> str:
        """Puts the first document back; what happened, in words."""
        if self.restored:
            return f"/config/{self.scope} unchanged"
        current = await store.read(self._client, SCOPES, self.scope)
        if current.revision != self._revision:
            self.restored = False
            return (
                f"/config/{self.scope} NOT restored: changed by someone else meanwhile"
                f" (revision {current.revision}, ours was {self._revision})"
            )
        if self.before.revision == 0:  # there was none: back to the defaults
            await self._client.delete(config_key(self.scope).encode())
            await self._wait_for(lambda revision: revision == 0)
        else:
            revision = await store.write(
                self._client,
                SCOPES,
                self.scope,
                self.before.document,
                expected_revision=current.revision,
                author=self._author,
            )
            await wait_applied(self._client, self.scope, revision, APPLY_TIMEOUT)
        self.restored = True
        return f"/config/{self.scope} restored"

    async def _wait_for(self, applied: Callable[[int], bool]) -> None:
        deadline = time.monotonic() + APPLY_TIMEOUT
        while time.monotonic() < deadline:
            statuses = [
                s
                for s in await store.statuses(self._client)
                if self.scope == "global" or s.service == self.scope
            ]
            if all(applied(s.revisions.get(self.scope, 0)) for s in statuses):
                return
            await asyncio.sleep(0.05)
        raise TimeoutError(f"/config/{self.scope}: not applied within {APPLY_TIMEOUT:g}s")


@contextlib.asynccontextmanager
async def patched_config(
    client: aetcd.Client, scope: str, author: str, say: Callable[[str], None] = print
) -> AsyncIterator[ConfigPatch]:
    patch = ConfigPatch(client, await store.read(client, SCOPES, scope), author)
    try:
        yield patch
    finally:
        say(f"   {await patch.restore()}")
