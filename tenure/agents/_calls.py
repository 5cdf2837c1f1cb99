"""What a governed model call looks like to the code making it (see ``Context.model_call``).

The runtime implements it; agents and adapters only see this Protocol.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Protocol

__all__ = ["ModelCall"]


class ModelCall(Protocol):
    """One governed request to a model.

    ``async with ctx.model_call("gpt-4.1-mini", provider="openai") as call:`` decides (action
    ``call_model``, target the model name) and records the call before the block runs, and
    the run's stop cancels the block. Report what the response used with
    :meth:`record_usage`; it is recorded with the call and counted against ``max_tokens`` and
    ``max_cost`` when the block ends. A stream read across many awaits uses :meth:`open` and
    :meth:`close` instead, and checks :attr:`stopped` at every chunk; a sync client in a
    worker thread uses a plain ``with``.
    """

    model: str
    provider: str

    @property
    def step_id(self) -> str:
        """The governed step's id (empty before the call is open)."""
        ...

    @property
    def stopped(self) -> bool:
        """Whether the run has stopped: a stream must end at once."""
        ...

    async def open(self) -> None:
        """Decide and record the call (raises the denial, or the stop); idempotent."""
        ...

    def record_usage(
        self,
        *,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cost: float = 0.0,
        response_model: str | None = None,
    ) -> None:
        """What the response used (exact non-negative ints, a finite non-negative cost)."""
        ...

    def close(self, error: BaseException | None = None, result: Any = None) -> None:
        """Record how the call ended, with its usage; raises the stop if the run stopped."""
        ...

    def __enter__(self) -> ModelCall:
        """The sync form, for a sync client in a worker thread (never on the event loop)."""
        ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def __aenter__(self) -> ModelCall: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool: ...
