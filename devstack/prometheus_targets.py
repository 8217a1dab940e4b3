"""Prometheus' scrape targets, read from the service registry in etcd.

Every instance registers ``/services/<service>/<instance-id>`` with a JSON value whose
``metrics`` field is the host:port of its /metrics endpoint; the gateway too, as
``/services/gateway/<instance-id>``, so it is scraped under ``service="gateway"``. This
bridge polls that prefix and writes a file_sd JSON file, one group per instance labelled
with its service and instance id, so Prometheus finds instances exactly as the services
find each other.

Polling (not a watch) makes an etcd restart or a compaction a non-event: the next poll
simply sees the current state. It reads over etcd's gRPC API as ``prometheus-targets``,
whose role may read /services/ and nothing else: etcd's HTTP gateway ignores a client
certificate's name, so it cannot act as a user there.

    python -m devstack.prometheus_targets --etcd 127.0.0.1:22379 --tls-dir tls --out targets.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from types import FrameType
from typing import Any, Final

from aetcd.exceptions import ClientError

from pki.identities import PROMETHEUS_TARGETS
from shared.registry.etcd import EtcdClient, etcd_client
from shared.tls import ClientTLS

log = logging.getLogger("devstack.prometheus_targets")

SERVICES_PREFIX: Final = "/services/"
POLL_SECONDS: Final = 2.0
_ETCD_TIMEOUT: Final = 3.0

Group = dict[str, Any]
KeyValues = list[tuple[str, bytes]]


def parse_key(key: str) -> tuple[str, str] | None:
    """(service, instance id) of a registry key, or None for anything else under the prefix."""
    if not key.startswith(SERVICES_PREFIX):
        return None
    parts = key[len(SERVICES_PREFIX) :].split("/")
    if len(parts) != 2 or not all(parts):
        return None
    return parts[0], parts[1]


def file_sd_groups(kvs: Iterable[tuple[str, bytes]]) -> list[Group]:
    """The file_sd groups for the registry's key/values, sorted so equal input gives equal output.

    Instances without a metrics address (older builds, metrics disabled) are skipped, and so is
    anything malformed: one bad key must not take every other target away.
    """
    groups: list[Group] = []
    for key, value in kvs:
        parsed = parse_key(key)
        if parsed is None:
            continue
        service, instance_id = parsed
        try:
            record = json.loads(value)
        except ValueError:
            continue
        metrics = record.get("metrics") if isinstance(record, dict) else None
        if not isinstance(metrics, str) or not metrics.strip():
            continue
        groups.append(
            {
                "targets": [metrics.strip()],
                "labels": {"service": service, "instance_id": instance_id},
            }
        )
    groups.sort(key=lambda g: (g["labels"]["service"], g["labels"]["instance_id"]))
    return groups


def render(groups: list[Group]) -> str:
    return json.dumps(groups, indent=2) + "\n"


class RegistryReader:
    """The registry's key/values, read as ``prometheus-targets``.

    One client for the bridge's life; a new one once the certificate was renewed, since
    a channel keeps the credentials it was opened with.
    """

    def __init__(self, endpoint: str, tls_dir: Path) -> None:
        self.endpoint = endpoint
        self.tls_dir = tls_dir
        self._tls: ClientTLS | None = None
        self._client: EtcdClient | None = None

    async def __call__(self) -> KeyValues:
        """Every key/value under the prefix; raises ClientError, OSError or TimeoutError."""
        if self._tls is None:  # made here, so missing files are one more failed poll
            self._tls = ClientTLS(self.tls_dir, PROMETHEUS_TARGETS)
        if self._tls.reload() or self._client is None:
            await self.close()
            self._client = etcd_client(self.endpoint, tls=self._tls, timeout=_ETCD_TIMEOUT)
        found = await self._client.get_prefix(SERVICES_PREFIX.encode())
        return [(bytes(kv.key).decode(errors="replace"), bytes(kv.value)) for kv in found]

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()


def write_atomic(path: Path, text: str) -> None:
    """Prometheus re-reads the file whenever it changes: it must never see half of one."""
    tmp = path.with_name(path.name + ".tmp")  # not *.json, should a glob ever pick files up
    tmp.write_text(text)
    os.replace(tmp, path)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


class TargetsWriter:
    """Writes the file_sd file from the registry, only when it changed.

    While etcd is unreachable (or refuses) the last file stays, since the instances it
    lists are most likely still running; one line is logged per outage, not per poll.
    """

    def __init__(self, fetch: Callable[[], Awaitable[KeyValues]], out: Path) -> None:
        self.fetch = fetch
        self.out = out
        self._written = _read(out)
        self._unreachable = False

    async def poll(self) -> bool:
        """One round; returns whether the file was (re)written."""
        try:
            kvs = await self.fetch()
        except (ClientError, OSError, TimeoutError) as exc:
            if not self._unreachable:
                log.warning("etcd unreachable (%s); keeping %s, retrying", exc, self.out)
            self._unreachable = True
            return False
        if self._unreachable:
            log.info("etcd reachable again")
        self._unreachable = False
        groups = file_sd_groups(kvs)
        text = render(groups)
        if text == self._written:
            return False
        write_atomic(self.out, text)
        self._written = text
        log.info("wrote %d target(s) to %s", len(groups), self.out)
        return True


async def run(endpoint: str, tls_dir: Path, out: Path, interval: float = POLL_SECONDS) -> None:
    reader = RegistryReader(endpoint, tls_dir)
    writer = TargetsWriter(reader, out)
    try:
        while True:
            await writer.poll()
            await asyncio.sleep(interval)
    finally:
        await reader.close()


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--etcd", required=True, help="etcd client endpoint, host:port")
    parser.add_argument(
        "--tls-dir", required=True, type=Path, help="ca.pem and the prometheus-targets certificate"
    )
    parser.add_argument("--out", required=True, type=Path, help="file_sd JSON file to write")
    parser.add_argument("--interval", type=float, default=POLL_SECONDS, help="seconds per poll")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    log.info(
        "polling %s%s every %.1fs into %s", args.etcd, SERVICES_PREFIX, args.interval, args.out
    )
    try:
        asyncio.run(run(args.etcd, args.tls_dir, args.out, args.interval))
    except (KeyboardInterrupt, SystemExit):
        log.info("stopped")


if __name__ == "__main__":
    main()
