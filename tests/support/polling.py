"""Waiting for state that lives in another process (a file it appends to, its exit)."""

from __future__ import annotations

from collections.abc import Callable

import anyio


async def until(predicate: Callable[[], bool], seconds: float = 15.0) -> None:
    """Poll ``predicate`` until it holds (bounded): another process's state has no event
    to await here."""
    with anyio.fail_after(seconds):
        while not predicate():  # noqa: ASYNC110 (the state changes in another process)
            await anyio.sleep(0.01)
