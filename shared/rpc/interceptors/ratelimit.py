"""Rate limits: a token bucket per caller and per method, on each instance.

``TokenBucket`` is the pure state machine (a clock is injected, nothing sleeps): it
refills at ``rate_per_second`` up to ``burst`` tokens, and ``take`` either spends a
token or says how long until one is there; it never waits. ``BucketTable`` keeps one
bucket per (caller, method), the least recently used evicted past ``max_keys``, and
re-tunes the buckets when the config center swaps in other limits.
``RateLimitInterceptor`` puts it in the server chain, right after auth:

- the caller is the token's user; a call with no token (Login, Register) is its
  peer's host, so one client cannot sign in a thousand times a second either;
- the limits are ``config.current.rate_limits`` (``/config/global``, or a
  service's own document), read once per call, so a change applies to the next call
  without a restart and never half-way through one;
- health and reflection are never limited (probes and grpcurl must always answer);
- over the limit: ``RateLimited`` (RESOURCE_EXHAUSTED, ``error-reason: RATE_LIMITED``)
  with the wait in ``retry-after-ms``, and the call is not run.

The limits are per instance: N instances of a service admit up to N times the
limit in all. A global limit needs a counter the instances share (Redis, etcd), or
each instance dividing its limit by the instance count it sees in discovery.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from urllib.parse import unquote

from shared.auth.identity import current_identity_or_none
from shared.config.center import ConfigCenter, RuntimeConfig
from shared.config.models import RateLimit
from shared.errors import RateLimited
from shared.observability.metrics import RATE_LIMIT_REJECTIONS
from shared.rpc.interceptors.base import AdmissionInterceptor, Context

Clock = Callable[[], float]

# Never limited: Kubernetes' probes, load balancers and grpcurl must always get through.
UNLIMITED_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
MAX_KEYS = 10_000
# Refill arithmetic in floats: a token short by less than this is a whole token, so a
# caller that waits exactly the retry-after it was given is let through.
_EPSILON = 1e-9


class TokenBucket:
    """``burst`` tokens to start with, ``rate_per_second`` more every second, up to ``burst``.

    ``take`` spends one token and returns 0.0, or spends nothing and returns the
    seconds until a token is there. ``retune`` changes the rate and the capacity,
    keeping the tokens already earned (at most the new capacity).
    """

    def __init__(self, rate_per_second: float, burst: int, now: Clock = time.monotonic) -> None:
        _check(rate_per_second, burst)
        self._now = now
        self._rate = float(rate_per_second)
        self._burst = burst
        self._tokens = float(burst)
        self._stamp = now()

    @property
    def rate_per_second(self) -> float:
        return self._rate

    @property
    def burst(self) -> int:
        return self._burst

    @property
    def tokens(self) -> float:
        """The tokens there are now (refilled up to this moment)."""
        self._refill()
        return self._tokens

    def _refill(self) -> None:
        now = self._now()
        elapsed = now - self._stamp
        if elapsed > 0:  # a clock that went backwards earns nothing
            self._tokens = min(float(self._burst), self._tokens + elapsed * self._rate)
            self._stamp = now

    def take(self) -> float:
        self._refill()
        if self._tokens >= 1.0 - _EPSILON:
            self._tokens = max(0.0, self._tokens - 1.0)
            return 0.0
        return (1.0 - self._tokens) / self._rate

    def retune(self, rate_per_second: float, burst: int) -> None:
        _check(rate_per_second, burst)
        self._refill()  # what was earned so far, at the old rate
        self._rate = float(rate_per_second)
        self._burst = burst
        self._tokens = min(self._tokens, float(burst))


def _check(rate_per_second: float, burst: int) -> None:
    if not (rate_per_second > 0 and math.isfinite(rate_per_second)):
        raise ValueError(f"rate_per_second must be a positive number, not {rate_per_second!r}")
    if burst < 1:
        raise ValueError(f"burst must be at least 1, not {burst!r}")


class BucketTable:
    """One bucket per (caller, method); at most ``max_keys``, least recently used out first.

    A bucket follows the limit in force for its method: ``retune`` at a config swap (so
    the time after the swap counts at the new rate), and ``take`` re-tunes too if the
    limit it is given differs from the bucket's. An evicted caller comes back with a
    full bucket, so ``max_keys`` should exceed the callers active within a refill time.
    """

    def __init__(self, max_keys: int = MAX_KEYS, now: Clock = time.monotonic) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self._max_keys = max_keys
        self._now = now
        self._buckets: OrderedDict[tuple[str, str], TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def __contains__(self, key: object) -> bool:
        return key in self._buckets

    def get(self, caller: str, method: str) -> TokenBucket | None:
        """The bucket of (caller, method), if there is one; does not count as a use."""
        return self._buckets.get((caller, method))

    def retune(self, limit_for: Callable[[str], RateLimit]) -> int:
        """Every bucket to the limit now in force for its method (``limit_for``); how
        many changed. Each first counts the time since its last call at its old limit."""
        changed = 0
        for (_, method), bucket in self._buckets.items():
            limit = limit_for(method)
            if (bucket.rate_per_second, bucket.burst) != (limit.rate_per_second, limit.burst):
                bucket.retune(limit.rate_per_second, limit.burst)
                changed += 1
        return changed

    def clear(self) -> None:
        self._buckets.clear()

    def take(self, caller: str, method: str, limit: RateLimit) -> float:
        """0.0 if the call may go ahead, else the seconds until it may."""
        key = (caller, method)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = TokenBucket(limit.rate_per_second, limit.burst, self._now)
            self._buckets[key] = bucket
            while len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            if (bucket.rate_per_second, bucket.burst) != (limit.rate_per_second, limit.burst):
                bucket.retune(limit.rate_per_second, limit.burst)
        return bucket.take()


def peer_host(peer: str | None) -> str:
    """The host part of gRPC's peer string: ``ipv4:10.0.0.7:53211`` → ``10.0.0.7``,
    ``ipv6:[::1]:53211`` (or ``ipv6:%5B::1%5D:53211``) → ``::1``, ``unix:/p`` → ``/p``."""
    if not peer:
        return "unknown"
    scheme, sep, rest = peer.partition(":")
    if not sep:
        return peer
    rest = unquote(rest)
    if scheme in ("ipv4", "ipv6"):
        host, _, port = rest.rpartition(":")
        if host and port.isdigit():
            rest = host
        return rest.removeprefix("[").removesuffix("]")
    return rest or peer


def caller_of(context: Context) -> str:
    """The token's user if the call has one (auth ran before us), else the peer's host."""
    identity = current_identity_or_none()
    if identity is not None:
        return f"user:{identity.user_id}"
    return f"peer:{peer_host(context.peer())}"


def retry_after_ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


class RateLimitInterceptor(AdmissionInterceptor):
    """Refuses a call over its caller's limit for the method, before the servicer runs.

    A streaming call counts once, when it starts.
    """

    def __init__(
        self, config: ConfigCenter, *, max_keys: int = MAX_KEYS, now: Clock = time.monotonic
    ) -> None:
        self._config = config
        self.buckets = BucketTable(max_keys, now)
        config.listeners.append(self._on_config)

    def _on_config(self, config: RuntimeConfig) -> None:
        """At a swap: the buckets follow the new limits from now on; switched off, they
        go (switched on again, every caller starts with a full bucket)."""
        limits = config.rate_limits
        if not limits.enabled:
            self.buckets.clear()
            return
        self.buckets.retune(limits.for_method)

    def admit(self, method: str, context: Context) -> None:
        if method.startswith(UNLIMITED_PREFIXES):
            return
        limits = self._config.current.rate_limits  # once: this call's view of the knobs
        if not limits.enabled:
            return
        limit = limits.for_method(method)
        wait = self.buckets.take(caller_of(context), method, limit)
        if wait > 0:
            RATE_LIMIT_REJECTIONS.labels(method).inc()
            ms = retry_after_ms(wait)
            raise RateLimited(
                f"rate limit exceeded for {method}: at most {limit.rate_per_second:g} calls"
                f" per second per caller (bursts of {limit.burst}) on this instance;"
                f" retry in {ms} ms",
                ms,
            )
