"""The rate limiter's state machine, on a fake clock: nothing sleeps, nothing is timed."""

from __future__ import annotations

import contextvars
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
import pytest

from shared.auth.identity import Identity, Role, set_current_identity
from shared.config.center import ConfigCenter
from shared.config.models import GlobalConfig, RateLimit, RateLimits
from shared.errors import RateLimited
from shared.rpc import status
from shared.rpc.interceptors.ratelimit import (
    BucketTable,
    RateLimitInterceptor,
    TokenBucket,
    peer_host,
    retry_after_ms,
)

T = TypeVar("T")
METHOD = "/shop.product.v1.ProductService/GetProduct"
OTHER = "/shop.product.v1.ProductService/ListProducts"


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


# --- the bucket ---------------------------------------------------------------------------


def test_a_full_bucket_allows_a_burst_then_refuses_with_the_wait() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate_per_second=2, burst=3, now=clock)
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take() == pytest.approx(0.5)  # one token every 1/2 s
    assert bucket.take() == pytest.approx(0.5)  # a refusal spends nothing


def test_it_refills_at_the_rate_and_never_past_the_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate_per_second=4, burst=2, now=clock)
    bucket.take()
    bucket.take()
    clock.advance(0.125)  # half a token
    assert bucket.take() == pytest.approx(0.125)
    clock.advance(0.125)
    assert bucket.take() == 0.0
    clock.advance(3600)
    assert bucket.tokens == 2.0
    assert [bucket.take() for _ in range(3)][:2] == [0.0, 0.0]


def test_waiting_exactly_the_retry_after_is_enough() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate_per_second=3, burst=1, now=clock)
    bucket.take()
    for _ in range(50):  # float refill arithmetic must not leave a hair short of a token
        wait = bucket.take()
        assert wait > 0
        clock.advance(wait)
        assert bucket.take() == 0.0


def test_a_clock_going_backwards_earns_nothing() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate_per_second=1, burst=1, now=clock)
    bucket.take()
    clock.advance(-10)
    assert bucket.take() == pytest.approx(1.0)
    clock.advance(10.5)  # back to where it was, plus half a second
    assert bucket.take() == pytest.approx(0.5)


def test_retune_keeps_what_was_earned_within_the_new_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate_per_second=1, burst=10, now=clock)
    for _ in range(4):
        bucket.take()  # 6 left
    bucket.retune(rate_per_second=100, burst=3)
    assert bucket.tokens == 3.0
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take() == pytest.approx(0.01)
    bucket.retune(rate_per_second=0.5, burst=20)  # a bigger burst is not a gift
    assert bucket.tokens == pytest.approx(0.0)
    assert bucket.take() == pytest.approx(2.0)


def test_retune_counts_the_time_before_it_at_the_old_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate_per_second=10, burst=5, now=clock)
    for _ in range(5):
        bucket.take()
    clock.advance(0.2)  # 2 tokens at the old rate
    bucket.retune(rate_per_second=1, burst=5)
    assert bucket.tokens == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("rate", "burst"), [(0, 1), (-1, 1), (float("inf"), 1), (float("nan"), 1), (1, 0)]
)
def test_a_nonsense_limit_is_refused(rate: float, burst: int) -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate, burst, now=FakeClock())


def test_retry_after_is_whole_milliseconds_rounded_up() -> None:
    assert retry_after_ms(0.0001) == 1
    assert retry_after_ms(0.25) == 250
    assert retry_after_ms(0.2501) == 251


# --- the table ----------------------------------------------------------------------------

SLOW = RateLimit(rate_per_second=1, burst=2)


def test_each_caller_and_method_has_its_own_bucket() -> None:
    table = BucketTable(now=FakeClock())
    assert [table.take("a", METHOD, SLOW) for _ in range(3)][2] > 0
    assert table.take("b", METHOD, SLOW) == 0.0  # another caller
    assert table.take("a", OTHER, SLOW) == 0.0  # another method
    assert len(table) == 3


def test_a_changed_limit_retunes_the_buckets_on_their_next_call() -> None:
    clock = FakeClock()
    table = BucketTable(now=clock)
    table.take("a", METHOD, SLOW)
    table.take("a", METHOD, SLOW)
    assert table.take("a", METHOD, SLOW) == pytest.approx(1.0)
    faster = RateLimit(rate_per_second=100, burst=2)
    assert table.take("a", METHOD, faster) == pytest.approx(0.01)
    bucket = table.get("a", METHOD)
    assert bucket is not None and (bucket.rate_per_second, bucket.burst) == (100, 2)
    clock.advance(0.01)
    assert table.take("a", METHOD, faster) == 0.0
    tighter = RateLimit(rate_per_second=100, burst=1)
    clock.advance(10)
    assert table.take("a", METHOD, tighter) == 0.0
    assert table.take("a", METHOD, tighter) > 0  # the burst shrank to 1


def test_the_table_is_bounded_and_drops_the_least_recently_used() -> None:
    table = BucketTable(max_keys=3, now=FakeClock())
    for caller in ("a", "b", "c"):
        table.take(caller, METHOD, SLOW)
    table.take("a", METHOD, SLOW)  # a is now the most recent: b is the oldest
    table.take("d", METHOD, SLOW)
    assert len(table) == 3
    assert ("b", METHOD) not in table
    assert all((c, METHOD) in table for c in ("a", "c", "d"))
    for i in range(100):
        table.take(f"x{i}", METHOD, SLOW)
    assert len(table) == 3


def test_an_evicted_caller_comes_back_with_a_full_bucket() -> None:
    table = BucketTable(max_keys=1, now=FakeClock())
    table.take("a", METHOD, SLOW)
    table.take("a", METHOD, SLOW)
    assert table.take("a", METHOD, SLOW) > 0
    table.take("b", METHOD, SLOW)  # evicts a
    assert table.take("a", METHOD, SLOW) == 0.0


# --- who the caller is --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("peer", "host"),
    [
        ("ipv4:10.0.0.7:53211", "10.0.0.7"),
        ("ipv6:[::1]:53211", "::1"),
        ("ipv6:%5B::1%5D:53211", "::1"),
        ("ipv6:[fe80::1%25eth0]:1", "fe80::1%eth0"),
        ("unix:/tmp/socket", "/tmp/socket"),
        ("", "unknown"),
        (None, "unknown"),
    ],
)
def test_the_peer_is_its_host_without_the_port(peer: str | None, host: str) -> None:
    assert peer_host(peer) == host


# --- the interceptor, without a server ----------------------------------------------------


class FakeContext:
    def __init__(self, peer: str) -> None:
        self._peer = peer

    def peer(self) -> str:
        return self._peer


def center_with(limits: RateLimits) -> ConfigCenter:
    return ConfigCenter.fixed("product", GlobalConfig(rate_limits=limits))


def tiny(burst: int = 2, **more: Any) -> RateLimits:
    return RateLimits(methods={METHOD: RateLimit(rate_per_second=1, burst=burst)}, **more)


def as_user(user: uuid.UUID | None, call: Callable[[], T]) -> T:
    """Runs ``call`` as auth would leave it, without leaking the identity to other tests."""

    def run() -> T:
        identity = None if user is None else Identity(user, Role.CUSTOMER)
        set_current_identity(identity)
        return call()

    return contextvars.copy_context().run(run)


def admit(
    interceptor: RateLimitInterceptor,
    user: uuid.UUID | None,
    method: str = METHOD,
    peer: str = "ipv4:10.1.1.1:4000",
) -> RateLimited | None:
    def call() -> RateLimited | None:
        try:
            interceptor.admit(method, FakeContext(peer))  # type: ignore[arg-type]
        except RateLimited as error:
            return error
        return None

    return as_user(user, call)


def test_over_the_limit_is_rate_limited_with_retry_after_and_reason() -> None:
    clock = FakeClock()
    interceptor = RateLimitInterceptor(center_with(tiny()), now=clock)
    alice = uuid.uuid4()
    assert admit(interceptor, alice) is None
    assert admit(interceptor, alice) is None
    error = admit(interceptor, alice)
    assert error is not None
    assert status.status_code(error) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert dict(status.trailers(error)) == {
        status.REASON_KEY: "RATE_LIMITED",
        status.RETRY_AFTER_KEY: "1000",
    }
    assert METHOD in error.message and "retry in 1000 ms" in error.message
    assert "RateLimited" not in error.message
    assert admit(interceptor, uuid.uuid4()) is None  # another user: untouched
    assert admit(interceptor, alice, method=OTHER) is None  # the default limit: generous
    clock.advance(1)
    assert admit(interceptor, alice) is None


def test_without_a_token_the_caller_is_the_peer_host() -> None:
    interceptor = RateLimitInterceptor(center_with(tiny(burst=1)), now=FakeClock())
    assert admit(interceptor, None, peer="ipv4:10.0.0.1:1111") is None
    # the same host from another port is the same caller
    assert admit(interceptor, None, peer="ipv4:10.0.0.1:2222") is not None
    assert admit(interceptor, None, peer="ipv4:10.0.0.2:1111") is None


@pytest.mark.parametrize(
    "method", ["/grpc.health.v1.Health/Check", "/grpc.reflection.v1.ServerReflection/Info"]
)
def test_health_and_reflection_are_never_limited(method: str) -> None:
    everything_tiny = RateLimits(default=RateLimit(rate_per_second=0.001, burst=1))
    interceptor = RateLimitInterceptor(center_with(everything_tiny), now=FakeClock())
    assert all(admit(interceptor, None, method=method) is None for _ in range(100))
    assert len(interceptor.buckets) == 0


def swap(center: ConfigCenter, limits: RateLimits) -> None:
    """What the center does when etcd brings another document: replace, then tell."""
    center.current = center_with(limits).current
    for listener in center.listeners:
        listener(center.current)


def test_a_config_swap_applies_to_the_next_call() -> None:
    clock = FakeClock()
    center = center_with(tiny(burst=1))
    interceptor = RateLimitInterceptor(center, now=clock)
    alice = uuid.uuid4()
    assert admit(interceptor, alice) is None
    error = admit(interceptor, alice)
    assert error is not None and error.retry_after_ms == 1000

    # Looser: the time since the swap counts at the new rate.
    swap(center, RateLimits(methods={METHOD: RateLimit(rate_per_second=1000, burst=5)}))
    clock.advance(0.003)
    assert [admit(interceptor, alice) for _ in range(3)] == [None, None, None]
    assert admit(interceptor, alice) is not None

    # Tighter: at once, whatever was in the bucket.
    clock.advance(10)
    swap(center, tiny(burst=2))
    assert [admit(interceptor, alice) for _ in range(2)] == [None, None]
    error = admit(interceptor, alice)
    assert error is not None and error.retry_after_ms == 1000

    # Off: everything passes, and the buckets go; on again: every caller starts full.
    swap(center, tiny(burst=2, enabled=False))
    assert all(admit(interceptor, alice) is None for _ in range(10))
    assert len(interceptor.buckets) == 0
    swap(center, tiny(burst=2))
    assert [admit(interceptor, alice) for _ in range(2)] == [None, None]
    assert admit(interceptor, alice) is not None


def test_the_current_config_is_followed_even_without_a_swap_notice() -> None:
    center = center_with(tiny(burst=1))
    interceptor = RateLimitInterceptor(center, now=FakeClock())
    alice = uuid.uuid4()
    assert admit(interceptor, alice) is None
    assert admit(interceptor, alice) is not None
    center.current = center_with(tiny(burst=1, enabled=False)).current  # no listener called
    assert all(admit(interceptor, alice) is None for _ in range(10))
    looser = RateLimits(methods={METHOD: RateLimit(rate_per_second=1000, burst=1)})
    center.current = center_with(looser).current
    error = admit(interceptor, alice)
    assert error is not None and error.retry_after_ms == 1  # the new rate: 1 ms a token


def test_retune_all_moves_each_bucket_to_its_methods_limit() -> None:
    clock = FakeClock()
    table = BucketTable(now=clock)
    for caller in ("a", "b"):
        table.take(caller, METHOD, SLOW)
        table.take(caller, OTHER, SLOW)
    faster = RateLimit(rate_per_second=50, burst=4)
    limits = RateLimits(default=SLOW, methods={METHOD: faster})
    assert table.retune(limits.for_method) == 2  # the METHOD buckets of a and b
    assert table.retune(limits.for_method) == 0
    clock.advance(1)
    for caller in ("a", "b"):
        method_bucket, other_bucket = table.get(caller, METHOD), table.get(caller, OTHER)
        assert method_bucket is not None and other_bucket is not None
        assert method_bucket.tokens == 4.0  # refilled at 50/s since the retune
        assert other_bucket.tokens == 2.0  # 1 left + 1 s at 1/s
