"""One edge fuzz run, as ``make fuzz`` and the short test in ``make test`` do it: the system
up (edge_system.py), every REST route and OAuth2 endpoint fuzzed (edge_fuzzer.py), then
the audit and the half-written checks (edge_audit.py); a broken one is a failure too."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from devstack.stack import Stack
from tests.fuzz.edge_audit import audited, half_written
from tests.fuzz.edge_fuzzer import EdgeFuzzer
from tests.fuzz.edge_system import EdgeSystem
from tests.fuzz.harness import Failure
from tests.support.tokens import TestKeys


@dataclass
class EdgeRun:
    failures: list[Failure]
    report: str  # requests and status codes per route
    audit: str  # the audit's report
    labels: list[str] = field(default_factory=list)  # every target fuzzed
    seen: dict[str, dict[str, int]] = field(default_factory=dict)  # route -> status -> n


def _after_run(problems: list[str], audit_text: str, audit_ok: bool) -> list[Failure]:
    found = []
    if problems:
        found.append(
            Failure("half-written", "after the run", "-", "-", problems[0], "", problems[:20])
        )
    if not audit_ok:
        found.append(Failure("audit", "after the run", "-", "-", "", "", audit_text.split("\n")))
    return found


async def run_edge(
    stack: Stack,
    keys: TestKeys,
    *,
    examples: int,
    seed: int,
    minutes: float = 0.0,
    routes: Sequence[str] = (),
    progress: Callable[[str], None] | None = None,
) -> EdgeRun:
    """``routes``: only the targets whose label holds one of these (all without)."""
    async with EdgeSystem(stack, keys) as system:
        fuzzer = EdgeFuzzer(system)
        try:
            await fuzzer.prepare()
            targets = [t for t in fuzzer.targets() if not routes or any(r in t[0] for r in routes)]
            if progress is not None:
                progress(f"edge: fuzzing {len(targets)} routes and endpoints through {system.url}")
            failures = await fuzzer.run(
                examples=examples, seed=seed, minutes=minutes, targets=targets, progress=progress
            )
        finally:
            await fuzzer.close()
        problems = await half_written(stack)
        audit = await audited(stack)
        seen = {label: dict(s.codes) for label, s in fuzzer.stats.items()}
        return EdgeRun(
            failures + _after_run(problems, audit.render(), audit.ok),
            fuzzer.report(),
            audit.render(),
            [label for label, _ in targets],
            seen,
        )
