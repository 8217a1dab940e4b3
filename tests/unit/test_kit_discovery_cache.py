"""The instance cache behind discovery: round-robin, removal, ejection."""

from __future__ import annotations

import json

import pytest

from shared.registry.discovery import Instance, InstanceCache, NoInstanceAvailable, parse_instance


def instance(n: int, service: str = "product") -> Instance:
    return Instance(service, f"i{n}", f"127.0.0.1:{5000 + n}", "1", n)


def test_round_robin_visits_every_instance_in_turn() -> None:
    cache = InstanceCache()
    for n in (1, 2, 3):
        cache.upsert(instance(n))
    picks = [cache.pick("product").instance_id for _ in range(6)]
    assert picks == ["i1", "i2", "i3", "i1", "i2", "i3"]


def test_removed_instance_is_never_picked_again() -> None:
    cache = InstanceCache()
    cache.upsert(instance(1))
    cache.upsert(instance(2))
    cache.remove("product", "i1")
    assert {cache.pick("product").instance_id for _ in range(4)} == {"i2"}


def test_no_instance_raises_unavailable() -> None:
    with pytest.raises(NoInstanceAvailable):
        InstanceCache().pick("order")


def test_ejected_instance_is_skipped_while_others_live() -> None:
    cache = InstanceCache()
    cache.upsert(instance(1))
    cache.upsert(instance(2))
    cache.eject(instance(1), seconds=60)
    assert {cache.pick("product").instance_id for _ in range(4)} == {"i2"}


def test_ejected_instance_still_used_when_it_is_the_only_one() -> None:
    cache = InstanceCache()
    cache.upsert(instance(1))
    cache.eject(instance(1), seconds=60)
    assert cache.pick("product").instance_id == "i1"


def test_replace_all_reports_instances_that_vanished() -> None:
    cache = InstanceCache()
    gone: list[str] = []
    cache.listeners.append(lambda i, alive: None if alive else gone.append(i.instance_id))
    cache.upsert(instance(1))
    cache.upsert(instance(2))
    cache.replace_all([instance(2)])
    assert gone == ["i1"]
    assert [i.instance_id for i in cache.instances("product")] == ["i2"]


def test_parse_instance_reads_the_registration_record() -> None:
    value = json.dumps({"address": "10.0.0.1:50052", "version": "0.1.0", "started_at": "x"})
    parsed = parse_instance(b"/services/product/abc", value.encode(), 7)
    assert parsed == Instance("product", "abc", "10.0.0.1:50052", "0.1.0", 7)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (b"/services/product", b"{}"),
        (b"/services/product/x", b"not json"),
        (b"/services/product/x", b'{"version": "1"}'),
        (b"/services/a/b/c", b'{"address": "h:1"}'),
    ],
)
def test_parse_instance_ignores_malformed_records(key: bytes, value: bytes) -> None:
    assert parse_instance(key, value, 1) is None
