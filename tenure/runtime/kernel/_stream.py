"""Streaming tools, governed item by item.

``await ctx.call(stream_tool, ...)`` goes through the same governed step as any tool call —
decided, recorded (``step.start``, flushed) before the generator is even created — and
returns a :class:`ToolStream`. Iterating it drives the tool's async generator inside the
calling agent's task, under that task's gate, so every await of the generator is a gated
resumption like any other.

Invariants:

- **No item after a stop**: before each item is asked for and again after it is produced,
  the run's stop (and the caller's lease) is checked; an item produced after the stop is
  discarded and the stop raised instead. A revoke mid-stream ends it within one item.
- **The end is recorded once**, as a ``step.end`` record with ``items`` (how many items the
  agent received) and ``result`` = a running SHA-256 over those items' value digests, in
  order, whatever the end: exhausted (``ok``), closed early by the agent (``closed``), the
  generator raising (``error``) or the run stopping (``stopped``).
- Closing the stream (``aclose``, leaving ``async with``, or the agent unwinding) closes the
  generator, whose ``finally`` blocks run under the usual cleanup rules.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncGenerator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from ...evidence._format import STEP_END
from ...lineage._spans import SpanHandle
from ._state import value_digest

if TYPE_CHECKING:
    from ..._errors import GovernanceViolation
    from ._gate import Gate
    from ._state import Step

__all__ = ["StreamHost", "ToolStream"]


class StreamHost(Protocol):
    """What a stream asks of its run."""

    @property
    def stop(self) -> GovernanceViolation | None:
        """The run's stop, if it stopped."""
        ...

    def stop_error(self) -> GovernanceViolation:
        """The run's stop, ready to raise."""
        ...

    def ensure_live(self, caller: Step | None, gate: Gate | None = None, what: str = "") -> None:
        """Raise the stop (or the caller's failed check) before the next item."""
        ...

    def try_record(
        self,
        kind: str,
        fields: dict[str, Any],
        span: SpanHandle | None = None,
        *,
        flush: bool = True,
    ) -> None:
        """Append a record on a path that may be stopping."""
        ...

    def leave(self, step: Step) -> None:
        """The step ended."""
        ...


class ToolStream:
    """The governed iterator a streaming tool call returns (see the module docstring)."""

    __slots__ = ("_agen", "_caller", "_done", "_gate", "_hash", "_items", "_run", "_step")

    def __init__(
        self,
        run: StreamHost,
        caller: Step,
        step: Step,
        agen: AsyncGenerator[Any, None],
        gate: Gate | None,
    ) -> None:
        self._run = run
        self._caller = caller
        self._step = step
        self._agen = agen
        self._gate = gate
        self._items = 0
        self._hash = hashlib.sha256()
        self._done = False

    @property
    def items(self) -> int:
        """How many items the agent has received so far."""
        return self._items

    def __aiter__(self) -> ToolStream:
        return self

    async def __anext__(self) -> Any:
        if self._done:
            raise StopAsyncIteration
        run = self._run
        try:
            run.ensure_live(self._caller, self._gate, self._step.target.qualified)
            with self._step.span.current():
                item = await self._agen.__anext__()
            if run.stop is not None:
                raise run.stop_error()  # produced after the stop: discarded
        except StopAsyncIteration:
            self._end("ok", None)
            raise
        except BaseException as exc:
            await self._close_quietly()
            self._end("stopped" if run.stop is not None else "error", exc)
            raise
        self._items += 1
        self._hash.update(value_digest(item).encode())
        return item

    async def aclose(self) -> None:
        """Stop early: close the generator and record the end (``closed``)."""
        if self._done:
            return
        try:
            await self._agen.aclose()
        except BaseException as exc:
            self._end("stopped" if self._run.stop is not None else "error", exc)
            raise
        self._end("closed" if self._run.stop is None else "stopped", self._run.stop)

    async def __aenter__(self) -> ToolStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _close_quietly(self) -> None:
        try:
            await self._agen.aclose()
        except BaseException:  # the generator already failed; its first error is the outcome
            return

    def _end(self, status: str, error: BaseException | None) -> None:
        if self._done:
            return
        self._done = True
        run, step = self._run, self._step
        step.span.end(error if status in ("error", "stopped") else None)
        run.try_record(
            STEP_END,
            {
                "step": step.id,
                "status": status,
                "result": "sha256:" + self._hash.hexdigest(),
                "items": self._items,
                "error": type(error).__name__ if error is not None else "",
                "message": str(error)[:500] if error is not None else "",
            },
            step.span,
            flush=False,
        )
        run.leave(step)

    def __repr__(self) -> str:
        return f"<ToolStream {self._step.target.qualified} items={self._items}>"
