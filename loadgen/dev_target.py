"""The `make run` system as the load's target, started the way `make run` starts it.

`make load` targets the dev stack that `make run` serves. If no service is
registered there, it runs `python -m devstack.run` (the very code behind `make
run`) in the background, waits for its ``ready`` line, and stops it with
SIGINT at the end, which stops the services and then the infrastructure.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from devstack.audit import stack_dsns
from devstack.launcher import REPO_ROOT, SERVICES, is_serving, oauth_secrets_dir, open_directory
from devstack.stack import Stack
from loadgen.buyers import TokenCache
from loadgen.target import Target
from ops.oauth_clients import LOADGEN, secret_file
from shared.registry.discovery import ServiceDirectory
from shared.rpc.client import ServiceClients
from shared.tls import ClientTLS, cert_file

START_TIMEOUT = 240.0  # a first start may install PostgreSQL and fetch Kafka
STOP_TIMEOUT = 90.0


# A gateway this run starts serves the load unthrottled: its per-client rate limit
# (20/s) would otherwise be what a REST scenario measures (docs/load-tests.md).
UNLIMITED_GATEWAY = {"SHOP_GATEWAY_RATE_LIMIT_ENABLED": "false"}


def stack_target(
    stack: Stack, clients: ServiceClients, directory: ServiceDirectory, gateway_url: str = ""
) -> Target:
    """The system running on a devstack profile: its databases audited, its Prometheus read,
    its gateway (``gateway_url``, else the one in etcd) reached with the loadgen client's
    secret of this stack."""
    return Target(
        stack.profile.name,
        clients,
        directory,
        stack_dsns(stack),
        stack.prometheus.url,
        gateway_url,
        secret_file(oauth_secrets_dir(stack), LOADGEN),
    )


async def all_serving(directory: ServiceDirectory, tls: ClientTLS) -> bool:
    for service in SERVICES:
        instances = directory.instances(service)
        if not instances or not all([await is_serving(i, tls) for i in instances]):
            return False
    return True


def run_lock_holder(stack: Stack) -> int | None:
    """The pid of a live `make run` of this checkout, if any."""
    try:
        pid = int((stack.profile_dir / "run.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if is_alive(pid) else None


def is_alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


async def system_is_up(stack: Stack) -> bool:
    # No operator certificate yet: this stack was never started by this version.
    if not stack.is_up("etcd") or not cert_file(stack.tls_dir, "operator").exists():
        return False
    async with open_directory(stack) as directory:
        return await all_serving(directory, ClientTLS.operator(stack.tls_dir))


async def wait_until_up(stack: Stack, timeout: float, holder: int | None = None) -> None:
    """Until every service serves; if ``holder`` (the `make run` starting it) goes away
    first, it was stopping, not starting: RuntimeError."""
    async with asyncio.timeout(timeout):
        while not await system_is_up(stack):
            if holder is not None and not is_alive(holder):
                raise RuntimeError(
                    f"`make run` (pid {holder}) exited before the system was up; run again"
                )
            await asyncio.sleep(1.0)


@contextlib.asynccontextmanager
async def background_run(
    log_file: Path, say: Callable[[str], None], replicas: int | None = None
) -> AsyncIterator[None]:
    """`python -m devstack.run` (with ``--replicas``, if given) until the block ends; its output
    goes to ``log_file``."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    extra = [] if replicas is None else ["--replicas", str(replicas)]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "devstack.run",
        *extra,
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, **UNLIMITED_GATEWAY, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,  # our Ctrl-C is ours; we stop it in order below
    )
    ready = asyncio.Event()

    async def pump() -> None:
        assert process.stdout is not None
        with log_file.open("ab") as sink:
            async for line in process.stdout:
                sink.write(line)
                sink.flush()
                if line.startswith(b"ready"):
                    ready.set()

    pumping = asyncio.create_task(pump())
    try:
        waiting = asyncio.create_task(ready.wait())
        exited = asyncio.create_task(process.wait())
        await asyncio.wait(
            {waiting, exited}, timeout=START_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
        )
        waiting.cancel()
        exited.cancel()
        if not ready.is_set():
            raise RuntimeError(f"`python -m devstack.run` did not get ready; see {log_file}")
        say(f"started the dev stack (devstack.run, pid {process.pid}); its log: {log_file}")
        yield
    finally:
        if process.returncode is None:
            say("stopping the dev stack this run started ...")
            process.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
            except TimeoutError:
                process.kill()
                await process.wait()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(pumping, 5)


@contextlib.asynccontextmanager
async def dev_target(
    log_file: Path, say: Callable[[str], None] = print, *, replicas: int | None = None
) -> AsyncIterator[Target]:
    """The `make run` system; started in the background (and stopped after) if none is up,
    with ``replicas`` instances of each service if given (`make run REPLICAS=N`)."""
    stack = Stack("dev")
    async with contextlib.AsyncExitStack() as resources:
        if not await system_is_up(stack):
            holder = run_lock_holder(stack)
            if holder is not None:
                say(f"`make run` (pid {holder}) is starting; waiting until it is ready ...")
                try:
                    await wait_until_up(stack, START_TIMEOUT, holder)
                except TimeoutError:
                    raise RuntimeError(
                        f"`make run` (pid {holder}) has not had every service serving for "
                        f"{START_TIMEOUT:g}s; is one of them failing? (see its output)"
                    ) from None
            else:
                say("no services registered in etcd: starting the dev stack as `make run` does")
                await resources.enter_async_context(background_run(log_file, say, replicas))
        directory = await resources.enter_async_context(open_directory(stack))
        clients = ServiceClients(directory, ClientTLS.operator(stack.tls_dir))
        resources.push_async_callback(clients.close)
        yield stack_target(stack, clients, directory)


def dev_token_cache() -> TokenCache:
    """Beside the dev stack's data: a `devstack reset` forgets the tokens with the users."""
    return TokenCache(Stack("dev").profile_dir / "load-buyers.json")


def dev_spans_url() -> str:
    """Where the dev stack's Zipkin takes spans."""
    return Stack("dev").zipkin.spans_url
