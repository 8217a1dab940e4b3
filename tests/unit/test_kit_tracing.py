"""The sampler: parent-based, RPC roots at a live ratio, every other root dropped."""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.trace import SpanContext, SpanKind, TraceFlags

from shared.observability.tracing import ALWAYS_SAMPLE, LiveRatioSampler

RPC = {"rpc.system": "grpc"}
TRACE_ID = 0x1234_5678_9ABC_DEF0_1234_5678_9ABC_DEF0


def parent(sampled: bool) -> Context:
    context = SpanContext(
        TRACE_ID,
        0x1111_2222_3333_4444,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT),
    )
    return trace.set_span_in_context(trace.NonRecordingSpan(context))


def decide(
    sampler: LiveRatioSampler,
    kind: SpanKind,
    attributes: Mapping[str, str | bool] | None = None,
    context: Context | None = None,
) -> Decision:
    return sampler.should_sample(context, TRACE_ID, "span", kind, attributes).decision


def test_an_rpc_entering_the_system_is_sampled_at_the_ratio_read_live() -> None:
    ratio = [1.0]
    sampler = LiveRatioSampler(lambda: ratio[0])
    assert decide(sampler, SpanKind.SERVER, RPC) is Decision.RECORD_AND_SAMPLE
    ratio[0] = 0.0  # the config center changed it: the next root follows
    assert decide(sampler, SpanKind.SERVER, RPC) is Decision.DROP


def test_roots_that_are_not_rpcs_or_not_of_the_root_kinds_are_dropped() -> None:
    sampler = LiveRatioSampler(lambda: 1.0)
    assert decide(sampler, SpanKind.CLIENT, {"db.system": "postgresql"}) is Decision.DROP
    assert decide(sampler, SpanKind.CLIENT, RPC) is Decision.DROP  # a service's own call
    assert decide(sampler, SpanKind.PRODUCER) is Decision.DROP
    tool = LiveRatioSampler(lambda: 1.0, frozenset({SpanKind.CLIENT, SpanKind.INTERNAL}))
    assert decide(tool, SpanKind.CLIENT, RPC) is Decision.RECORD_AND_SAMPLE
    assert decide(tool, SpanKind.INTERNAL) is Decision.RECORD_AND_SAMPLE  # its own span
    assert decide(tool, SpanKind.CLIENT, {"db.system": "postgresql"}) is Decision.DROP


def test_a_child_follows_its_parent_whatever_the_ratio() -> None:
    never = LiveRatioSampler(lambda: 0.0)
    always = LiveRatioSampler(lambda: 1.0)
    sampled, unsampled = parent(True), parent(False)
    for kind in (SpanKind.CLIENT, SpanKind.CONSUMER, SpanKind.INTERNAL):
        assert decide(never, kind, context=sampled) is Decision.RECORD_AND_SAMPLE
        assert decide(always, kind, context=unsampled) is Decision.DROP


def test_a_root_a_person_asked_to_follow_is_kept_whatever_the_ratio() -> None:
    never = LiveRatioSampler(lambda: 0.0)
    followed = {ALWAYS_SAMPLE: True}
    assert decide(never, SpanKind.INTERNAL, followed) is Decision.RECORD_AND_SAMPLE
    assert decide(never, SpanKind.INTERNAL) is Decision.DROP
    # A child still follows its parent: the mark starts traces, it does not split them.
    assert decide(never, SpanKind.INTERNAL, followed, parent(False)) is Decision.DROP
