"""Fixtures for the dashboard tests: a scripted run directory and a way to drive an app."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from scripted_run import ScriptedRun


@pytest.fixture
def scripted(tmp_path):
    """A ScriptedRun writing to tmp_path/run (progressively: call its methods between assertions)."""
    return ScriptedRun(tmp_path / "run")


def _drive(app: Any, scenario: Callable[[Any], Awaitable[None]], size: tuple[int, int] = (100, 30)) -> Any:
    """Run `scenario(pilot)` inside `app.run_test()` and return the app's result."""

    async def main() -> None:
        async with app.run_test(size=size) as pilot:
            await scenario(pilot)

    asyncio.run(main())
    return app.return_value


async def _wait_until(pilot: Any, condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Let the app run until `condition()` holds (the tail thread polls the file)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the dashboard")
        await pilot.pause(0.02)
    await pilot.pause()


@pytest.fixture
def drive():
    """drive(app, scenario, size) → the app's return value."""
    return _drive


@pytest.fixture
def wait_until():
    """await wait_until(pilot, condition, timeout)."""
    return _wait_until
