"""Retries, the retry budget and deadline budgets, on a fake clock: nothing sleeps, nothing
is timed. The rules (shared/rpc/retry.py) alone, then ServiceClients.call's loop over
fake instances (a real InstanceCache, fake channels and stubs)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import grpc
import pytest

from shared.config.center import ConfigCenter
from shared.config.models import BreakerPolicy, DeadlinePolicy, GlobalConfig, RetryPolicy
from shared.registry.discovery import Instance, ServiceDirectory
from shared.rpc import deadlines
from shared.rpc.breaker import State
from shared.rpc.client import ServiceClients
from shared.rpc.retry import RetryBudget, backoff_seconds, decide, retryable
from shared.rpc.status import CIRCUIT_OPEN, DEADLINE_BUDGET_SPENT, REASON_KEY

C = grpc.StatusCode
POLICY = RetryPolicy(
    max_attempts=3,
    initial_backoff_ms=25,
    max_backoff_ms=500,
    multiplier=2,
    budget_max_tokens=10,
    budget_token_ratio=0.1,
)
NOT_RETRIED = (
    C.INVALID_ARGUMENT,
    C.PERMISSION_DENIED,
    C.FAILED_PRECONDITION,
    C.NOT_FOUND,
    C.ALREADY_EXISTS,
    C.UNAUTHENTICATED,
    C.RESOURCE_EXHAUSTED,
    C.ABORTED,
    C.INTERNAL,
    C.UNKNOWN,
    C.CANCELLED,
)


def rpc_error(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=code.name, debug_error_string=""
    )


# --- the rules --------------------------------------------------------------------------------


def test_only_unavailable_is_retried_and_deadline_exceeded_only_when_idempotent() -> None:
    assert retryable(C.UNAVAILABLE, idempotent=False)
    assert retryable(C.UNAVAILABLE, idempotent=True)
    assert not retryable(C.DEADLINE_EXCEEDED, idempotent=False)
    assert retryable(C.DEADLINE_EXCEEDED, idempotent=True)
    for code in NOT_RETRIED:
        assert not retryable(code, idempotent=True), code
        assert not retryable(code, idempotent=False), code


def test_backoff_is_exponential_capped_and_fully_jittered() -> None:
    top = [backoff_seconds(n, POLICY, rand=lambda: 1.0) for n in range(1, 8)]
    assert top == pytest.approx([0.025, 0.05, 0.1, 0.2, 0.4, 0.5, 0.5])
    assert backoff_seconds(3, POLICY, rand=lambda: 0.5) == pytest.approx(0.05)
    assert backoff_seconds(3, POLICY, rand=lambda: 0.0) == 0.0


def test_the_budget_allows_retries_only_above_half_its_tokens() -> None:
    budget = RetryBudget()
    assert budget.tokens(POLICY) == 10
    for _ in range(4):
        budget.on_failure(POLICY)
    assert budget.allows_retry(POLICY)  # 6 > 5
    budget.on_failure(POLICY)
    assert not budget.allows_retry(POLICY)  # 5 is not > 5
    budget.on_success(POLICY)
    assert budget.tokens(POLICY) == pytest.approx(5.1)
    assert budget.allows_retry(POLICY)


def test_the_budget_stays_within_zero_and_max_tokens() -> None:
    budget = RetryBudget()
    for _ in range(50):
        budget.on_failure(POLICY)
    assert budget.tokens(POLICY) == 0
    for _ in range(500):
        budget.on_success(POLICY)
    assert budget.tokens(POLICY) == 10
    smaller = POLICY.model_copy(update={"budget_max_tokens": 4})
    assert budget.tokens(smaller) == 4  # a live change caps what is there


def test_decide_says_why_not() -> None:
    budget = RetryBudget()

    def why(code: grpc.StatusCode, **kwargs: Any) -> str:
        args: dict[str, Any] = {
            "idempotent": False,
            "attempt": 1,
            "policy": POLICY,
            "budget": budget,
            "remaining": None,
            "rand": lambda: 1.0,
        }
        decision = decide(code, **{**args, **kwargs})
        assert not decision.retry
        return decision.why

    assert why(C.INVALID_ARGUMENT) == "INVALID_ARGUMENT is not retried"
    assert why(C.DEADLINE_EXCEEDED) == "DEADLINE_EXCEEDED is not retried"
    assert why(C.UNAVAILABLE, attempt=3) == "3 attempts made"
    assert why(C.UNAVAILABLE, remaining=0.02) == "the deadline would pass before a retry"
    assert decide(
        C.UNAVAILABLE, idempotent=False, attempt=1, policy=POLICY, budget=budget,
        remaining=0.03, rand=lambda: 1.0,
    ).delay == pytest.approx(0.025)  # fmt: skip
    for _ in range(5):
        budget.on_failure(POLICY)
    assert why(C.UNAVAILABLE) == "the retry budget is spent"


# --- ServiceClients.call over fakes -----------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@dataclass
class Attempt:
    address: str
    timeout: float | None


@dataclass
class Script:
    """What the fake instances answer, attempt by attempt (the last answer repeats)."""

    clock: Clock
    answers: list[grpc.StatusCode] = field(default_factory=list)
    takes: float = 0.0  # seconds each attempt takes on the fake clock
    attempts: list[Attempt] = field(default_factory=list)

    def answer(self, address: str, timeout: float | None) -> str:
        self.attempts.append(Attempt(address, timeout))
        self.clock.now += self.takes
        code = self.answers[min(len(self.attempts), len(self.answers)) - 1]
        if code != C.OK:
            raise rpc_error(code)
        return f"reply from {address}"


class FakeStub:
    def __init__(self, channel: Any, script: Script) -> None:
        self._address = channel.address
        self._script = script

    async def Get(self, timeout: float | None = None) -> str:
        return self._script.answer(self._address, timeout)


@dataclass
class FakeChannel:
    address: str


class FakeTLS:
    _credentials = object()

    def credentials(self) -> object:
        return self._credentials

    def channel(self, address: str, service: str) -> FakeChannel:
        return FakeChannel(address)


@dataclass
class Harness:
    clients: ServiceClients
    script: Script
    clock: Clock

    async def get(self, **kwargs: Any) -> str:
        """One call with a timeout of 5 s unless told otherwise."""
        kwargs.setdefault("timeout", 5.0)
        return await self.clients.call(
            "product",
            lambda channel: FakeStub(channel, self.script),
            lambda stub, timeout: stub.Get(timeout),
            **kwargs,
        )

    async def fails(self, **kwargs: Any) -> grpc.aio.AioRpcError:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await self.get(**kwargs)
        return caught.value


def harness(
    instances: int = 3,
    *,
    retry: RetryPolicy = POLICY,
    breaker: BreakerPolicy | None = None,
    margin_ms: float = 20.0,
    rand: float = 1.0,
) -> Harness:
    clock = Clock()
    directory = ServiceDirectory(cast(Any, None))  # never started: the cache is fed by hand
    for i in range(instances):
        directory.cache.upsert(Instance("product", f"p{i}", f"10.0.0.{i}:1", "1", 0))
    common = GlobalConfig(
        retry=retry,
        breaker=breaker or BreakerPolicy(failure_threshold=100),
        deadlines=DeadlinePolicy(margin_ms=margin_ms),
    )
    clients = ServiceClients(
        directory,
        cast(Any, FakeTLS()),
        config=ConfigCenter.fixed("order", common),
        clock=clock,
        sleep=clock.sleep,
        rand=lambda: rand,
    )
    return Harness(clients, Script(clock), clock)


@pytest.fixture(autouse=True)
def no_incoming_deadline() -> Iterator[None]:
    token = deadlines.set_incoming_deadline(None)
    yield
    deadlines._incoming.reset(token)


async def test_a_success_is_one_attempt() -> None:
    h = harness()
    h.script.answers = [C.OK]
    assert (await h.get()).startswith("reply from")
    assert len(h.script.attempts) == 1
    assert h.clock.slept == []


async def test_unavailable_is_retried_on_another_instance_each_time() -> None:
    h = harness(instances=3)
    h.script.answers = [C.UNAVAILABLE, C.UNAVAILABLE, C.OK]
    await h.get()
    addresses = [a.address for a in h.script.attempts]
    assert len(addresses) == 3 and len(set(addresses)) == 3
    # Exponential backoff (the fake jitter takes the whole ceiling).
    assert h.clock.slept == pytest.approx([0.025, 0.05])
    assert h.clients.counters[("product", "retries")] == 2


async def test_at_most_max_attempts_then_the_last_error() -> None:
    h = harness(instances=2)
    h.script.answers = [C.UNAVAILABLE]
    error = await h.fails()
    assert error.code() == C.UNAVAILABLE
    assert len(h.script.attempts) == POLICY.max_attempts
    # Two instances, three attempts: the third goes back to one already tried.
    assert {a.address for a in h.script.attempts} == {"10.0.0.0:1", "10.0.0.1:1"}


async def test_max_attempts_one_means_no_retry() -> None:
    h = harness(retry=POLICY.model_copy(update={"max_attempts": 1}))
    h.script.answers = [C.UNAVAILABLE, C.OK]
    await h.fails()
    assert len(h.script.attempts) == 1


@pytest.mark.parametrize("code", NOT_RETRIED)
async def test_other_codes_are_tried_once_even_for_idempotent_calls(
    code: grpc.StatusCode,
) -> None:
    h = harness()
    h.script.answers = [code, C.OK]
    assert (await h.fails(idempotent=True)).code() == code
    assert len(h.script.attempts) == 1


async def test_deadline_exceeded_is_retried_only_when_idempotent() -> None:
    h = harness()
    h.script.answers = [C.DEADLINE_EXCEEDED, C.OK]
    assert (await h.fails()).code() == C.DEADLINE_EXCEEDED
    assert len(h.script.attempts) == 1

    h = harness()
    h.script.answers = [C.DEADLINE_EXCEEDED, C.OK]
    await h.get(idempotent=True)
    assert len(h.script.attempts) == 2


async def test_every_attempt_gets_what_is_left_of_one_deadline() -> None:
    h = harness()
    h.script.answers = [C.UNAVAILABLE, C.UNAVAILABLE, C.OK]
    h.script.takes = 0.1
    await h.get(timeout=1.0)
    timeouts = [a.timeout for a in h.script.attempts]
    assert timeouts == pytest.approx([1.0, 1.0 - 0.1 - 0.025, 1.0 - 0.2 - 0.025 - 0.05])


async def test_no_retry_whose_backoff_ends_past_the_deadline() -> None:
    h = harness()
    h.script.answers = [C.UNAVAILABLE, C.OK]
    h.script.takes = 0.09
    # 10 ms left after the first attempt; the backoff would take 25.
    assert (await h.fails(timeout=0.1)).code() == C.UNAVAILABLE
    assert len(h.script.attempts) == 1


async def test_a_late_answer_uses_up_the_deadline_so_it_is_not_retried() -> None:
    h = harness()
    h.script.answers = [C.DEADLINE_EXCEEDED, C.OK]
    h.script.takes = 0.5  # the whole timeout
    assert (await h.fails(timeout=0.5, idempotent=True)).code() == C.DEADLINE_EXCEEDED
    assert len(h.script.attempts) == 1


async def test_the_outbound_timeout_is_capped_by_the_incoming_deadline_less_the_margin() -> None:
    h = harness(margin_ms=20)
    h.script.answers = [C.OK]
    deadlines.set_incoming_deadline(h.clock() + 0.3)
    await h.get(timeout=2.0)
    assert h.script.attempts[0].timeout == pytest.approx(0.28)
    deadlines.set_incoming_deadline(h.clock() + 10)
    await h.get(timeout=2.0)
    assert h.script.attempts[1].timeout == pytest.approx(2.0)


async def test_a_spent_budget_is_not_sent() -> None:
    h = harness(margin_ms=20)
    h.script.answers = [C.OK]
    deadlines.set_incoming_deadline(h.clock() + 0.015)  # under the margin
    error = await h.fails(timeout=2.0)
    assert error.code() == C.DEADLINE_EXCEEDED
    assert "not sent" in (error.details() or "")
    assert (REASON_KEY, DEADLINE_BUDGET_SPENT) in tuple(error.trailing_metadata() or ())
    assert h.script.attempts == []
    assert h.clients.counters[("product", "budget_spent")] == 1
    # Not the service's fault: its breaker heard nothing.
    assert h.clients.breaker("product").state(BreakerPolicy()) is State.CLOSED


async def test_deadline_scope_gives_work_without_an_rpc_a_deadline() -> None:
    h = harness(margin_ms=0)
    h.script.answers = [C.OK]
    with deadlines.deadline_scope(0.5, clock=h.clock):
        await h.get(timeout=2.0)
    assert h.script.attempts[0].timeout == pytest.approx(0.5)
    assert deadlines.incoming_deadline() is None


async def test_the_retry_budget_turns_retries_off_and_successes_earn_it_back() -> None:
    h = harness(instances=1)
    h.script.answers = [C.UNAVAILABLE]
    budget = h.clients.retry_budget("product")
    await h.fails()  # three attempts: 10 -> 7 tokens
    assert len(h.script.attempts) == 3
    await h.fails()  # 7 -> 6, retried (6 > 5); 6 -> 5, not (5 is half of 10)
    assert len(h.script.attempts) == 5
    assert h.clients.counters[("product", "retries_throttled")] == 1
    assert not budget.allows_retry(POLICY)
    await h.fails()  # throttled: tried once
    assert len(h.script.attempts) == 6
    h.script.answers = [C.OK]
    for _ in range(11):  # 0.1 a success: from 4 to above 5
        await h.get()
    assert budget.allows_retry(POLICY)


async def test_the_budget_is_per_target_service() -> None:
    h = harness()
    for _ in range(10):
        h.clients.retry_budget("product").on_failure(POLICY)
    assert not h.clients.retry_budget("product").allows_retry(POLICY)
    assert h.clients.retry_budget("payment").allows_retry(POLICY)


async def test_an_open_breaker_fails_at_once_without_calling() -> None:
    breaker = BreakerPolicy(failure_threshold=3, open_seconds=5.0, half_open_trials=1)
    h = harness(instances=1, breaker=breaker, retry=POLICY.model_copy(update={"max_attempts": 1}))
    h.script.answers = [C.UNAVAILABLE]
    for _ in range(3):
        await h.fails()
    assert h.clients.breaker("product").state(breaker) is State.OPEN
    tried = len(h.script.attempts)
    h.clock.now += 1.0
    error = await h.fails()
    assert isinstance(error, grpc.aio.AioRpcError)
    assert error.code() == C.UNAVAILABLE
    assert error.details() == "circuit open for product; retry in 4.0 s"
    assert (REASON_KEY, CIRCUIT_OPEN) in tuple(error.trailing_metadata() or ())
    assert len(h.script.attempts) == tried  # the network was not touched
    assert h.clients.counters[("product", "circuit_open")] == 1

    # Half-open after open_seconds: one trial goes through; it succeeds and closes it.
    h.clock.now += 4.0
    h.script.answers = [C.OK]
    h.script.attempts.clear()
    await h.get()
    assert h.clients.breaker("product").state(breaker) is State.CLOSED


async def test_a_breaker_opened_by_a_calls_own_failures_ends_its_retries() -> None:
    breaker = BreakerPolicy(failure_threshold=2, open_seconds=5.0, half_open_trials=1)
    h = harness(breaker=breaker, retry=POLICY.model_copy(update={"max_attempts": 5}))
    h.script.answers = [C.UNAVAILABLE]
    error = await h.fails()
    assert error.details() == "UNAVAILABLE"  # the real failure, not the circuit's
    assert len(h.script.attempts) == 2


async def test_caller_errors_keep_the_breaker_closed() -> None:
    breaker = BreakerPolicy(failure_threshold=2)
    h = harness(breaker=breaker)
    h.script.answers = [C.INVALID_ARGUMENT]
    for _ in range(5):
        await h.fails()
    assert h.clients.breaker("product").state(breaker) is State.CLOSED


async def test_an_invoke_without_timeout_still_works() -> None:
    h = harness()
    h.script.answers = [C.UNAVAILABLE, C.OK]
    reply = await h.clients.call(
        "product", lambda channel: FakeStub(channel, h.script), lambda stub: stub.Get()
    )
    assert reply.startswith("reply from")
    assert [a.timeout for a in h.script.attempts] == [None, None]


async def test_without_a_config_center_the_defaults_apply() -> None:
    directory = ServiceDirectory(cast(Any, None))
    directory.cache.upsert(Instance("product", "p0", "10.0.0.0:1", "1", 0))
    clients = ServiceClients(directory, cast(Any, FakeTLS()))
    assert clients.config.retry == RetryPolicy()
    assert clients.config.breaker == BreakerPolicy()


async def test_an_idempotent_attempt_is_cut_short_and_tried_on_another_instance() -> None:
    # A frozen instance answers nothing: the attempt runs out its own budget, not the call's.
    h = harness(instances=2, retry=POLICY.model_copy(update={"attempt_timeout_ms": 800}))
    h.script.answers = [C.DEADLINE_EXCEEDED, C.OK]
    h.script.takes = 0.8
    assert (await h.get(timeout=5.0, idempotent=True)).startswith("reply from")
    first, second = h.script.attempts
    assert first.timeout == pytest.approx(0.8) and second.timeout == pytest.approx(0.8)
    assert first.address != second.address
    # The frozen one is ejected: the next call goes to the other instance first.
    h.script.answers = [C.OK]
    await h.get(timeout=5.0, idempotent=True)
    assert h.script.attempts[-1].address == second.address


async def test_a_write_and_a_short_deadline_keep_the_whole_deadline_for_one_attempt() -> None:
    h = harness(retry=POLICY.model_copy(update={"attempt_timeout_ms": 800}))
    h.script.answers = [C.OK]
    await h.get(timeout=5.0)  # not idempotent: a late write must not be sent twice
    await h.get(timeout=0.5, idempotent=True)  # the deadline is shorter than an attempt
    assert [a.timeout for a in h.script.attempts] == pytest.approx([5.0, 0.5])
