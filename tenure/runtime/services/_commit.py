"""Closing a run's evidence off the event loop: the final fsync and checkpoint publication.

A run's ledger is sealed on the loop (its final checkpoint record, one signature, handed to
the OS) and committed in one of the runtime's commit threads: the run's
``attestation.intoto.json`` (the ledger's ``attestation`` record written out for in-toto
tools), then fsync, then the checkpoint file and the witness copy. The loop is never held by
a disk that is slow to sync, and runs that close together commit concurrently (at most
:data:`COMMIT_THREADS` at once), so the filesystem's journal commits their fsyncs together
instead of one after another.

The threads are the runtime's own and live as long as it does (started on demand, ended by
:meth:`EvidenceCommits.shutdown`): handing a commit over is a queue put and, when it is
done, one wake-up of the loop — no thread, task or limiter is set up per run (a sequential
run waits for its own commit, so this round trip is on its critical path).

Invariant: a run is reported done (``handle.result()`` returns or raises) only after its
commit returned: what the run recorded is durable, or the failure is its outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Final

import anyio

from ..._errors import GovernanceUnavailable
from ...evidence._ledger import Ledger

__all__ = ["COMMIT_THREADS", "EvidenceCommits"]

#: ledgers committed at once, at most (their fsyncs share the journal's commits)
COMMIT_THREADS: Final = 8

_Job = tuple[Ledger, "Callable[[], object] | None", asyncio.AbstractEventLoop, asyncio.Future[None]]


class EvidenceCommits:
    """The runtime's evidence closer (one per runtime; see the module docstring)."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._idle = 0  # threads waiting for a job, not yet promised one

    async def close(self, ledger: Ledger, write_out: Callable[[], object] | None = None) -> None:
        """Seal ``ledger`` here, commit it in a commit thread; raises what either raised.

        ``write_out`` (in the thread, before the commit) writes a file the ledger holds a
        copy of; its ``OSError`` is raised as :class:`GovernanceUnavailable` (check
        ``attestation.write``) after the ledger is committed all the same. Waiting is not
        cancellable: a commit under way always ends before this returns.
        """
        ledger.seal()
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._submit((ledger, write_out, loop, done))
        with anyio.CancelScope(shield=True):
            await done

    def shutdown(self) -> None:
        """End the commit threads once the commits queued so far are done."""
        with self._lock:
            threads, self._threads = self._threads, []
            self._idle = 0
        for _ in threads:
            self._jobs.put(None)

    def _submit(self, job: _Job) -> None:
        with self._lock:
            if self._idle:
                self._idle -= 1
            elif len(self._threads) < COMMIT_THREADS:
                thread = threading.Thread(target=self._work, name="tenure-commit", daemon=True)
                self._threads.append(thread)
                thread.start()
        self._jobs.put(job)

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            ledger, write_out, loop, done = job
            failure: BaseException | None = None
            try:
                _commit(ledger, write_out)
            except BaseException as exc:  # the run's outcome, handed to the loop
                failure = exc
            with self._lock:
                self._idle += 1
            # A closed loop (RuntimeError) has nobody waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, done, failure)


def _settle(done: asyncio.Future[None], failure: BaseException | None) -> None:
    if done.done():
        return
    if failure is None:
        done.set_result(None)
    else:
        done.set_exception(failure)


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
