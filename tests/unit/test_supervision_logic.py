"""The launcher's pure pieces: the restart backoff and the instances.json format."""

from __future__ import annotations

import json
import signal

import pytest

from devstack.launcher import InstanceRecord, RestartBackoff, describe_exit, parse_instances


def test_backoff_doubles_to_its_cap_and_resets_after_a_long_enough_run() -> None:
    backoff = RestartBackoff()
    delays = [backoff.next_delay(uptime=1.0) for _ in range(7)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert backoff.next_delay(uptime=10.0) == 0.5  # stayed up long enough: forgiven
    assert backoff.next_delay(uptime=9.9) == 1.0


def test_exits_are_described_by_code_or_signal() -> None:
    assert describe_exit(0) == "code 0"
    assert describe_exit(3) == "code 3"
    assert describe_exit(-signal.SIGKILL) == "signal SIGKILL"
    assert describe_exit(-200) == "signal 200"


def test_the_state_file_round_trips() -> None:
    rows = [{"service": "order", "index": 1, "instance_id": "order-2-ab12", "pid": 42, "port": 9}]
    assert parse_instances(json.dumps(rows)) == [InstanceRecord("order", 1, "order-2-ab12", 42, 9)]
    assert parse_instances("[]") == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "is not valid JSON"),
        ('{"service": "order"}', "must be a list of objects with service, index"),
        ('[{"service": "order"}]', "must be a list of objects"),
        (
            '[{"service": "order", "index": 0, "instance_id": "x", "pid": "7", "port": 1}]',
            "pid and port must be integers",
        ),
        (
            '[{"service": 5, "index": 0, "instance_id": "x", "pid": 7, "port": 1}]',
            "the rest text",
        ),
    ],
)
def test_a_malformed_state_file_says_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as raised:
        parse_instances(text, "instances.json")
    assert str(raised.value).startswith("instances.json")
