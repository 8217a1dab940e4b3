"""CLI: `python -m devstack up|down|status|start|stop|kill|reset|env|install [-p PROFILE]`."""

from __future__ import annotations

import logging
import shlex
import sys
import time
from collections.abc import Callable
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer

from devstack.config import PROFILES
from devstack.process import StackError

if TYPE_CHECKING:
    from devstack.stack import Stack

app = typer.Typer(
    help="Local PostgreSQL + etcd + Kafka + Zipkin + Prometheus for the shop services (no Docker).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class ProfileName(StrEnum):
    dev = "dev"
    test = "test"
    bench = "bench"
    # The baseline of `make bench-trust`: no TLS or auth on etcd, Kafka and PostgreSQL.
    bench_plain = "bench-plain"
    fuzz = "fuzz"
    test2 = "test2"
    test3 = "test3"
    test4 = "test4"
    test5 = "test5"


assert {p.value for p in ProfileName} == set(PROFILES), "keep ProfileName in sync with config"


class ComponentName(StrEnum):
    postgres = "postgres"
    etcd = "etcd"
    kafka = "kafka"
    zipkin = "zipkin"
    prometheus = "prometheus"


ProfileOpt = Annotated[
    ProfileName,
    typer.Option(
        "--profile",
        "-p",
        envvar="DEVSTACK_PROFILE",
        help="dev for `make run`, test for `make test`.",
    ),
]
ComponentArg = Annotated[ComponentName, typer.Argument(help="Which daemon.")]


def _stack(profile: ProfileName | str) -> Stack:
    # Imported late: `install` and `env` should not pay for asyncio and friends.
    from devstack.stack import Stack

    return Stack(str(profile))


def _run(action: str, fn: Callable[[], object]) -> None:
    """Turn StackError into a clean message and exit code 1; timings help spot slow starts."""
    started = time.monotonic()
    try:
        fn()
    except StackError as exc:
        typer.echo(f"devstack {action} failed: {exc}", err=True)
        raise typer.Exit(1) from None
    elapsed = time.monotonic() - started
    if elapsed > 1:
        typer.echo(f"devstack {action}: done in {elapsed:.1f}s", err=True)


@app.command()
def install() -> None:
    """Install PostgreSQL, etcd, Prometheus, the Kafka and Zipkin jars if missing (else a no-op)."""
    from devstack.install import ensure_all

    _run("install", ensure_all)


@app.command()
def up(profile: ProfileOpt = ProfileName.dev) -> None:
    """Start everything, wait until usable, create the databases and topics."""
    stack = _stack(profile)

    def go() -> None:
        if not stack.up():
            typer.echo(f"stack '{stack.profile.name}' already up")

    _run("up", go)


@app.command()
def down(profile: ProfileOpt = ProfileName.dev) -> None:
    """Stop every daemon (exit 0 even if nothing ran)."""
    stack = _stack(profile)

    def go() -> None:
        if not stack.down():
            typer.echo(f"stack '{stack.profile.name}' was not running")

    _run("down", go)


@app.command()
def status(profile: ProfileOpt = ProfileName.dev) -> None:
    """Show each daemon; exit 0 only if all are up."""
    rows = _stack(profile).status()
    for row in rows:
        pid = str(row.pid) if row.pid is not None else "-"
        typer.echo(f"{row.name:<10} {pid:>8}  {row.endpoint:<16} {'up' if row.up else 'down'}")
    raise typer.Exit(0 if all(r.up for r in rows) else 1)


@app.command()
def start(component: ComponentArg, profile: ProfileOpt = ProfileName.dev) -> None:
    """Start one daemon (no-op if up)."""
    stack = _stack(profile)

    def go() -> None:
        if not stack.start(component.value):
            typer.echo(f"{component.value} already up")

    _run("start", go)


@app.command()
def stop(component: ComponentArg, profile: ProfileOpt = ProfileName.dev) -> None:
    """Gracefully stop one daemon."""
    stack = _stack(profile)

    def go() -> None:
        if not stack.stop(component.value):
            typer.echo(f"{component.value} was not running")

    _run("stop", go)


@app.command()
def kill(component: ComponentArg, profile: ProfileOpt = ProfileName.dev) -> None:
    """SIGKILL one daemon, simulating a crash."""
    stack = _stack(profile)

    def go() -> None:
        if not stack.kill(component.value):
            typer.echo(f"{component.value} was not running")

    _run("kill", go)


@app.command()
def reset(profile: ProfileOpt = ProfileName.dev) -> None:
    """Stop everything and delete the profile's data."""
    _run("reset", _stack(profile).reset)


@app.command()
def env(profile: ProfileOpt = ProfileName.dev) -> None:
    """Print `export` lines for the endpoints, for `eval "$(python -m devstack env)"`."""
    for key, value in _stack(profile).env().items():
        typer.echo(f"export {key}={shlex.quote(value)}")


def main() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    devstack_log = logging.getLogger("devstack")
    devstack_log.addHandler(handler)
    devstack_log.setLevel(logging.INFO)
    devstack_log.propagate = False
    # aiokafka logs each refused connection while the broker boots; readiness polling expects them.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    app()


if __name__ == "__main__":
    main()
