"""Reading and writing the config documents, as `shopctl config` does: validated first,
written with a compare-and-swap on the revision, every write kept in a history.

``write`` is one etcd transaction: it succeeds only if the document's mod_revision is
still the one the writer read (0: absent), and it puts the document and its history
entry together. Two admins cannot overwrite each other unknowingly: the second gets
``ConfigConflict`` and reads again. ``rollback`` is a write of an earlier entry.

The kit knows no service: every call names the ``ConfigScopes`` (the services and
their documents' models) it reads or writes, which the caller knows.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import aetcd
from pydantic import ValidationError

from shared.config.center import STATUS_PREFIX, config_key, one_line
from shared.config.models import ConfigScopes, validate_document
from shared.registry.watch import prefix_range

HISTORY_PREFIX = "/config-history/"


class ConfigConflict(Exception):
    """Someone else wrote the document since it was read."""

    def __init__(self, scope: str, expected: int, actual: int) -> None:
        super().__init__(
            f"{config_key(scope)} changed: you read revision {expected}, it is now at {actual}; "
            "read it again and reapply your change"
        )
        self.actual = actual


class InvalidDocument(ValueError):
    pass


@dataclass(frozen=True)
class StoredDocument:
    scope: str
    document: dict[str, Any]
    revision: int  # mod_revision; 0 when there is no document (the defaults are in force)


@dataclass(frozen=True)
class HistoryEntry:
    entry_id: str  # sortable: nanoseconds since the epoch
    at: float
    author: str
    replaced_revision: int
    document: dict[str, Any]


@dataclass(frozen=True)
class InstanceStatus:
    service: str
    instance_id: str
    revisions: dict[str, int]
    refused: dict[str, int]


def check_scope(scopes: ConfigScopes, scope: str) -> None:
    if scope not in scopes:
        raise InvalidDocument(f"unknown scope {scope!r} (known: {', '.join(scopes)})")


def check_document(scopes: ConfigScopes, scope: str, document: Any) -> None:
    """The same validation every instance applies (without the environment's defaults)."""
    check_scope(scopes, scope)
    try:
        validate_document(scopes[scope], document)
    except (ValueError, ValidationError) as error:
        raise InvalidDocument(one_line(error)) from None


async def read(client: aetcd.Client, scopes: ConfigScopes, scope: str) -> StoredDocument:
    check_scope(scopes, scope)
    got = await client.get(config_key(scope).encode())
    if got is None:
        return StoredDocument(scope, {}, 0)
    return StoredDocument(scope, json.loads(bytes(got.value)), got.mod_revision)


async def write(
    client: aetcd.Client,
    scopes: ConfigScopes,
    scope: str,
    document: dict[str, Any],
    *,
    expected_revision: int,
    author: str,
) -> int:
    """Validates, then writes if nobody wrote since ``expected_revision``; the new revision."""
    check_document(scopes, scope, document)
    key = config_key(scope).encode()
    now = time.time()
    entry = {
        "at": now,
        "author": author,
        "replaced_revision": expected_revision,
        "document": document,
    }
    history_key = f"{HISTORY_PREFIX}{scope}/{time.time_ns():020d}".encode()
    succeeded, _ = await client.transaction(
        compare=[client.transactions.mod(key) == expected_revision],
        success=[
            client.transactions.put(key, json.dumps(document, sort_keys=True).encode()),
            client.transactions.put(history_key, json.dumps(entry, sort_keys=True).encode()),
        ],
        failure=[],
    )
    current = await read(client, scopes, scope)
    if not succeeded:
        raise ConfigConflict(scope, expected_revision, current.revision)
    return current.revision


async def history(client: aetcd.Client, scopes: ConfigScopes, scope: str) -> list[HistoryEntry]:
    """Oldest first."""
    check_scope(scopes, scope)
    start, end = prefix_range(f"{HISTORY_PREFIX}{scope}/".encode())
    entries = []
    for kv in await client.get_range(start, end):
        raw = json.loads(bytes(kv.value))
        entries.append(
            HistoryEntry(
                entry_id=bytes(kv.key).decode().rsplit("/", 1)[1],
                at=float(raw["at"]),
                author=str(raw["author"]),
                replaced_revision=int(raw["replaced_revision"]),
                document=dict(raw["document"]),
            )
        )
    return entries


async def rollback(
    client: aetcd.Client,
    scopes: ConfigScopes,
    scope: str,
    *,
    to: str | None,
    expected_revision: int,
    author: str,
) -> tuple[HistoryEntry, int]:
    """Writes an earlier document again: entry ``to``, or the one before the latest."""
    entries = await history(client, scopes, scope)
    if to is None:
        if len(entries) < 2:
            raise InvalidDocument(f"{config_key(scope)} has no earlier version to go back to")
        target = entries[-2]
    else:
        matches = [e for e in entries if e.entry_id == to]
        if not matches:
            raise InvalidDocument(f"no history entry {to!r} for {config_key(scope)}")
        target = matches[0]
    revision = await write(
        client, scopes, scope, target.document, expected_revision=expected_revision, author=author
    )
    return target, revision


async def statuses(client: aetcd.Client) -> list[InstanceStatus]:
    """What every live instance applied (the keys live under the instances' leases)."""
    start, end = prefix_range(STATUS_PREFIX.encode())
    found = []
    for kv in await client.get_range(start, end):
        service, instance_id = bytes(kv.key).decode().removeprefix(STATUS_PREFIX).split("/", 1)
        raw = json.loads(bytes(kv.value))
        found.append(
            InstanceStatus(service, instance_id, dict(raw["revisions"]), dict(raw["refused"]))
        )
    return sorted(found, key=lambda s: (s.service, s.instance_id))
