"""`make demo-config`: a knob changed live on every instance, an invalid document refused,
and a rollback, against `make run` (seed ch. 并发安全的配置管理, 2.5).

1. the default rate limit's burst is changed with a compare-and-swap, as
   `shopctl config set global ...` does, and every instance applies it (no restart);
2. an invalid document is written straight into etcd, past shopctl's validation, as a
   careless script would: every instance refuses it and keeps the last good revision;
3. `shopctl config rollback global` puts the document from before step 1 back.
"""

from __future__ import annotations

import asyncio
import sys
import time

import aetcd

from demos.session import DemoResult, on_make_run
from devstack.launcher import SERVICES
from ops.config_admin import SCOPES, wait_applied
from shared.config import store
from shared.config.center import config_key
from shared.config.models import GlobalConfig
from shared.registry.discovery import ServiceDirectory

APPLY_TIMEOUT = 10.0


def say(message: str) -> None:
    print(message, flush=True)


async def run_demo(client: aetcd.Client, directory: ServiceDirectory) -> DemoResult:
    instances = sum(len(directory.instances(s)) for s in SERVICES)
    before = await store.read(client, SCOPES, "global")
    if before.revision == 0:  # no document yet: the defaults, written down to come back to
        await store.write(client, SCOPES, "global", {}, expected_revision=0, author="demo-config")
        before = await store.read(client, SCOPES, "global")
    say(f"1. /config/global is at revision {before.revision}; {instances} instances are up")
    current = GlobalConfig.model_validate(before.document)
    burst = current.rate_limits.default.burst
    changed = dict(before.document)
    changed["rate_limits"] = {
        **current.rate_limits.model_dump(),
        "default": {**current.rate_limits.default.model_dump(), "burst": burst + 1},
    }
    say(f"   shopctl config set global ...  (default burst {burst} -> {burst + 1})")
    started = time.monotonic()
    revision = await store.write(
        client, SCOPES, "global", changed, expected_revision=before.revision, author="demo-config"
    )
    applied, _ = await wait_applied(client, "global", revision, APPLY_TIMEOUT)
    took_ms = (time.monotonic() - started) * 1000
    for s in applied:
        say(f"   {s.service:<9} {s.instance_id:<24} applied global@{s.revisions['global']}")
    say(f"   revision {revision} on {len(applied)}/{instances} instances in {took_ms:.0f} ms")

    say("2. an invalid document straight into etcd (burst -5), past shopctl's validation")
    try:
        store.check_document(SCOPES, "global", {"rate_limits": {"default": {"burst": -5}}})
        refused_by_shopctl = False
    except store.InvalidDocument as error:
        refused_by_shopctl = True
        say(f"   shopctl would refuse it: {error}")
    await client.put(
        config_key("global").encode(),
        b'{"rate_limits": {"default": {"rate_per_second": 1, "burst": -5}}}',
    )
    bad = (await store.read(client, SCOPES, "global")).revision
    refused = await every_instance_refused(client, bad, instances)
    say(f"   {refused}/{instances} instances refused revision {bad} and kept {revision}")

    say("3. shopctl config rollback global  (back to the document before step 1)")
    entry, rolled = await store.rollback(
        client, SCOPES, "global", to=None, expected_revision=bad, author="demo-config"
    )
    restored, _ = await wait_applied(client, "global", rolled, APPLY_TIMEOUT)
    back = (
        (await store.read(client, SCOPES, "global")).document == entry.document == before.document
    )
    say(f"   revision {rolled} (entry {entry.entry_id}) applied on {len(restored)} instances")
    ok = (
        len(applied) == instances
        and refused_by_shopctl
        and refused == instances
        and back
        and len(restored) == instances
    )
    summary = (
        f"demo-config: applied rev {revision} on {len(applied)}/{instances} instances in "
        f"{took_ms:.0f} ms; invalid {'refused' if refused == instances else 'NOT refused'}; "
        f"rollback {'ok' if back else 'FAILED'}"
    )
    return DemoResult(ok, summary)


async def every_instance_refused(client: aetcd.Client, revision: int, instances: int) -> int:
    deadline = time.monotonic() + APPLY_TIMEOUT
    while True:
        refused = [s for s in await store.statuses(client) if s.refused.get("global") == revision]
        if len(refused) >= instances or time.monotonic() > deadline:
            return len(refused)
        await asyncio.sleep(0.05)


async def main() -> int:
    return await on_make_run(
        "demo-config", SERVICES, lambda client, directory, _: run_demo(client, directory)
    )


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
