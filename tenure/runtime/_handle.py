"""The handle of a started run: its id, its evidence folder and its outcome."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .._util import NoPublicConstructor, final
from .backends._link import BackendLink
from .kernel._run import Run

__all__ = ["RunHandle"]


@final
class RunHandle(metaclass=NoPublicConstructor):
    """A started run: its id, where its evidence is, and its outcome (``rt.start`` makes it)."""

    __slots__ = ("_link", "_run")

    def __init__(self, run: Run, link: BackendLink | None = None) -> None:
        self._run = run
        self._link = link

    @property
    def run_id(self) -> str:
        """The run id (also the evidence folder's name)."""
        return self._run.id

    @property
    def evidence_path(self) -> Path:
        """``evidence_dir/<run_id>``."""
        return self._run.ledger.path.parent

    @property
    def done(self) -> bool:
        """True once the run has ended and its evidence is closed."""
        return self._run.done.is_set()

    async def result(self) -> Any:
        """Wait for the end; return the root agent's result or raise why it stopped.

        With a shared backend it returns once the run's last records are in its segment
        too (an export right after sees the whole run).
        """
        await self._run.done.wait()
        if self._link is not None:
            await self._link.flush_segment(self._run.evidence_name)
        run = self._run
        if run.stop is not None:
            raise run.stop_error()
        if run.error is not None:
            raise run.error
        return run.result

    def cancel(self, reason: str = "cancelled by its caller") -> None:
        """Stop the run without a violation (recorded as cancelled)."""
        self._run.cancel(reason)
