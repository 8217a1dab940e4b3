"""Prometheus' scrape targets, read from the service registry in etcd.

Every instance registers ``/services/<service>/<instance-id>`` with a JSON value whose
``metrics`` field is the host:port of its /metrics endpoint. This bridge polls that prefix
and writes a file_sd JSON file, one group per instance labelled with its service and
instance id, so Prometheus finds instances exactly as the services find each other.

Polling (not a watch) keeps it to the standard library and makes an etcd restart or a
compaction a non-event: the next poll simply sees the current state. It talks to etcd's
v3 HTTP/JSON gateway, so no grpc is needed here.

    python -m devstack.prometheus_targets --etcd 127.0.0.1:22379 --out targets.json
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from types import FrameType
from typing import Any, Final

log = logging.getLogger("devstack.prometheus_targets")

SERVICES_PREFIX: Final = "/services/"
POLL_SECONDS: Final = 2.0
_ETCD_TIMEOUT: Final = 3.0

Group = dict[str, Any]


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


def _prefix_end(prefix: bytes) -> bytes:
    """etcd's range_end for "every key starting with prefix": the prefix with its last byte + 1."""
    return prefix[:-1] + bytes([prefix[-1] + 1])


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def fetch_registry(endpoint: str, prefix: str = SERVICES_PREFIX) -> list[tuple[str, bytes]]:
    """Every key/value under prefix, through the gateway's POST /v3/kv/range.

    Raises OSError, ValueError or HTTPException when etcd cannot answer.
    """
    host, _, port = endpoint.rpartition(":")
    body = json.dumps(
        {"key": _b64(prefix.encode()), "range_end": _b64(_prefix_end(prefix.encode()))}
    )
    conn = http.client.HTTPConnection(host, int(port), timeout=_ETCD_TIMEOUT)
    try:
        conn.request("POST", "/v3/kv/range", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        payload = resp.read()
    finally:
        conn.close()
    if resp.status != 200:
        raise ValueError(f"etcd answered {resp.status}: {payload[:200]!r}")
    # The gateway leaves out empty fields: no "kvs" at all when nothing is registered.
    return [
        (
            base64.b64decode(kv["key"]).decode(errors="replace"),
            base64.b64decode(kv.get("value", "")),
        )
        for kv in json.loads(payload).get("kvs", [])
    ]


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

    While etcd is unreachable the last file stays, since the instances it lists are most
    likely still running; one line is logged per outage, not per poll.
    """

    def __init__(self, endpoint: str, out: Path) -> None:
        self.endpoint = endpoint
        self.out = out
        self._written = _read(out)
        self._unreachable = False

    def poll(self) -> bool:
        """One round; returns whether the file was (re)written."""
        try:
            kvs = fetch_registry(self.endpoint)
        except (OSError, ValueError, http.client.HTTPException) as exc:
            if not self._unreachable:
                log.warning(
                    "etcd %s unreachable (%s); keeping %s, retrying", self.endpoint, exc, self.out
                )
            self._unreachable = True
            return False
        if self._unreachable:
            log.info("etcd %s reachable again", self.endpoint)
        self._unreachable = False
        groups = file_sd_groups(kvs)
        text = render(groups)
        if text == self._written:
            return False
        write_atomic(self.out, text)
        self._written = text
        log.info("wrote %d target(s) to %s", len(groups), self.out)
        return True


def run(endpoint: str, out: Path, interval: float = POLL_SECONDS) -> None:
    writer = TargetsWriter(endpoint, out)
    while True:
        writer.poll()
        time.sleep(interval)


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--etcd", required=True, help="etcd client endpoint, host:port")
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
        run(args.etcd, args.out, args.interval)
    except (KeyboardInterrupt, SystemExit):
        log.info("stopped")


if __name__ == "__main__":
    main()
