"""Closing a run's evidence off the event loop: the final fsync and checkpoint publication.

A run's ledger is sealed on the loop (its final checkpoint record, one signature, handed to
the OS) and committed in a worker thread: the run's ``attestation.intoto.json`` (the
ledger's ``attestation`` record written out for in-toto tools), then fsync, then the
checkpoint file and the witness copy. The loop is never held by a disk that is slow to
sync, and runs that close together commit concurrently (at most :data:`COMMIT_THREADS` at
once), so the filesystem's journal commits their fsyncs together instead of one after
another.

Invariant: a run is reported done (``handle.result()`` returns or raises) only after its
commit returned: what the run recorded is durable, or the failure is its outcome.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import anyio

from ..._errors import GovernanceUnavailable
from ...evidence._ledger import Ledger

__all__ = ["COMMIT_THREADS", "EvidenceCommits"]

#: ledgers committed at once, at most (their fsyncs share the journal's commits)
COMMIT_THREADS: Final = 8


class EvidenceCommits:
    """The runtime's evidence closer (one per runtime; see the module docstring)."""

    def __init__(self) -> None:
        self._limiter = anyio.CapacityLimiter(COMMIT_THREADS)

    async def close(self, ledger: Ledger, write_out: Callable[[], object] | None = None) -> None:
        """Seal ``ledger`` here, commit it in a worker thread; raises what either raised.

        ``write_out`` (in the thread, before the commit) writes a file the ledger holds a
        copy of; its ``OSError`` is raised as :class:`GovernanceUnavailable` (check
        ``attestation.write``) after the ledger is committed all the same.
        """
        ledger.seal()
        await anyio.to_thread.run_sync(_commit, ledger, write_out, limiter=self._limiter)


def _commit(ledger: Ledger, write_out: Callable[[], object] | None) -> None:
    failed: OSError | None = None
    if write_out is not None:
        try:
            write_out()
        except OSError as exc:
            failed = exc
    ledger.commit()
    if failed is not None:
        reason = (
            f"cannot write the attestation in {ledger.run_dir}: {failed.strerror or failed} "
            "(the ledger's copy is recorded and signed)"
        )
        raise GovernanceUnavailable(
            reason, check="attestation.write", source="attestation"
        ) from failed
