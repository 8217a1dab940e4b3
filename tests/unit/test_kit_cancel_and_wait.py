"""Stopping a background task ends it even when it swallowed the first cancel."""

from __future__ import annotations

import asyncio
import time

import pytest

from shared import tasks
from shared.tasks import cancel_and_wait


async def swallows_one_cancel(cancelled: list[int]) -> None:
    """As a task in Python 3.11's asyncio.wait_for can: the cancel is lost, and the task
    goes on to wait for something that never comes."""
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        cancelled.append(1)
    await asyncio.Event().wait()


async def test_a_swallowed_cancel_is_repeated_until_the_task_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tasks, "CANCEL_RETRY_SECONDS", 0.1)
    cancelled: list[int] = []
    task = asyncio.create_task(swallows_one_cancel(cancelled))
    await asyncio.sleep(0)
    started = time.perf_counter()
    async with asyncio.timeout(5):
        await cancel_and_wait(task)
    assert task.cancelled() and cancelled == [1]
    assert time.perf_counter() - started < 1.0


async def test_a_task_that_ended_or_failed_is_waited_for_quietly() -> None:
    async def fails() -> None:
        raise RuntimeError("its own failure, logged by whoever ran it")

    failed = asyncio.create_task(fails())
    await asyncio.sleep(0)
    await cancel_and_wait(failed)  # does not raise
    plain = asyncio.create_task(asyncio.sleep(3600))
    await cancel_and_wait(plain)
    assert plain.cancelled()
