"""How synchronous tool bodies run: inline, in a thread, or in a worker process.

- ``"none"``: called inline on the event loop. Blocking here stalls governance; the stall
  detector reports it.
- ``"thread"``: the decision is recorded before the thread starts; on a stop the thread is
  abandoned (Python cannot stop it), its late result is discarded and the abandonment is
  recorded.
- ``"process"``: the body runs in a worker process that is killed on a stop, so its side
  effects end with its authority.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_process
import anyio.to_thread

from ._config import RuntimeConfig

if TYPE_CHECKING:
    from ..agents._decorators import Tool
    from ._run import Run, Step

__all__ = ["Isolation", "call_in_worker"]


def call_in_worker(module: str, qualname: str, args: tuple[Any, ...],
                   kwargs: dict[str, Any]) -> Any:
    """Worker-side trampoline: import the tool's module and call its plain function."""
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    func = getattr(obj, "func", obj)
    return func(*args, **kwargs)


class Isolation:
    """Runs synchronous tool bodies according to their declared isolation."""

    def __init__(self, config: RuntimeConfig) -> None:
        self._config = config

    async def call(self, run: Run, step: Step, tool: Tool, args: tuple[Any, ...],
                   kwargs: dict[str, Any]) -> Any:
        """Run the body of ``tool``; raise the run's stop if it arrives meanwhile."""
        if tool.isolation == "none":
            return tool.func(*args, **kwargs)
        if tool.isolation == "thread":
            result = await anyio.to_thread.run_sync(
                lambda: tool.func(*args, **kwargs), abandon_on_cancel=True
            )
            if run.stop is not None:
                run._record_quietly("step.abandoned", {"step": step.id,
                                                      "reason": run.stop.reason}, step.span)
            return result
        return await anyio.to_process.run_sync(
            call_in_worker, tool.func.__module__, tool.func.__qualname__, args, kwargs,
            cancellable=True,
        )
