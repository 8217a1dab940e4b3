"""`make audit`: the audit (ops/audit.py) over a local stack's databases.

python -m devstack.audit --profile dev      # the `make run` stack; exit 1 on a violation
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Annotated

import typer

from devstack.stack import Stack
from ops.audit import audit


def stack_dsns(stack: Stack) -> dict[str, str]:
    """The administrator's DSNs of the audited databases (inventory, order, payment)."""
    return {s: stack.pg_dsn(f"shop_{s}") for s in ("inventory", "order", "payment")}


def main(
    profile: Annotated[str, typer.Option(help="devstack profile: dev (make run) or test")] = "dev",
    settle: Annotated[float, typer.Option(help="re-check for up to this many seconds")] = 0.0,
    saga_timeout: Annotated[float, typer.Option(help="oldest a PENDING order may be")] = 40.0,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead")] = False,
) -> None:
    """Check every invariant; exit 1 on any violation."""
    report = asyncio.run(
        audit(stack_dsns(Stack(profile)), saga_timeout=saga_timeout, settle=settle)
    )
    print(json.dumps(report.as_dict(), indent=2, default=str) if as_json else report.render())
    sys.exit(0 if report.ok else 1)


if __name__ == "__main__":
    typer.run(main)
