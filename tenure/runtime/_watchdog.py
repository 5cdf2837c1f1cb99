"""The watchdog: one coroutine per runtime, woken by events and by a timer.

Each pass it beats its heartbeat (gates refuse to resume work once the heartbeat is older
than ``watchdog_liveness``), and for every live run: checks the wall-time budget,
re-decides live steps after a policy epoch change, renews leases that are still allowed,
re-verifies a bounded number of lease signatures round-robin (so every live lease is
re-verified within a few passes without paying a signature per await), and re-measures
the attested code and policy files every ``attest_interval``.

Invariant: if the watchdog itself fails, every live run stops with
:class:`GovernanceUnavailable` — a dead watchdog never means "no more checks".
"""

from __future__ import annotations

import itertools
from time import monotonic
from typing import TYPE_CHECKING

import anyio

from ._errors import GovernanceUnavailable, GovernanceViolation, SignatureInvalid

if TYPE_CHECKING:
    from ._run import Run
    from ._runtime import Runtime, _Engine

__all__ = ["Watchdog"]


class Watchdog:
    """See the module docstring."""

    def __init__(self, engine: _Engine, runtime: Runtime) -> None:
        self._engine = engine
        self._runtime = runtime
        self._wake = anyio.Event()
        self._last_attest = monotonic()
        self._verify_cursor = itertools.count()
        self.passes = 0

    def wake(self) -> None:
        """Ask for a pass as soon as the loop turns (revocation, reload, attestation)."""
        self._wake.set()

    def beat(self) -> None:
        """Refresh the heartbeat that every gate checks."""
        self._engine.gov.watchdog_deadline = monotonic() + self._engine.config.watchdog_liveness

    async def run(self) -> None:
        """The watchdog task body (never returns while the runtime is open)."""
        cancelled = anyio.get_cancelled_exc_class()
        try:
            self.beat()
            while True:
                with anyio.move_on_after(self._engine.config.watchdog_interval):
                    await self._wake.wait()
                self._wake = anyio.Event()
                self.beat()
                self.tick()
        except cancelled:
            raise
        except BaseException as exc:  # any crash: fail closed, never keep running unwatched
            self._engine.gov.watchdog_deadline = float("-inf")
            for run in list(self._engine.runs.values()):
                run.fail(GovernanceUnavailable(
                    f"the watchdog crashed: {type(exc).__name__}: {exc}",
                    check="watchdog.crashed", source="watchdog",
                ))
            if not isinstance(exc, Exception):
                raise

    def tick(self) -> None:
        """One pass over every live run."""
        self.passes += 1
        now = monotonic()
        engine = self._engine
        attest_due = now - self._last_attest >= engine.config.attest_interval
        if attest_due:
            self._last_attest = now
        for run in list(engine.runs.values()):
            run.watchdog_pass(now)
            if run.stop is None:
                self._reverify(run)
            if attest_due and run.stop is None:
                self._runtime.check_attestation()
                attest_due = False

    def _reverify(self, run: Run) -> None:
        leases = [s for s in run.leases.values() if s.active and not s.revoked]
        if not leases:
            return
        budget = self._engine.config.verify_per_tick
        start = next(self._verify_cursor) * budget
        authority = self._engine.authority
        for k in range(min(budget, len(leases))):
            state = leases[(start + k) % len(leases)]
            parent = state.parent.lease if state.parent is not None else None
            try:
                authority.verify(state.lease.envelope, parent=parent)
            except SignatureInvalid as exc:
                exc.run_id, exc.lease_id = run.id, state.id
                run.fail(exc)
                return
            except GovernanceViolation as exc:
                run.fail(exc)
                return
