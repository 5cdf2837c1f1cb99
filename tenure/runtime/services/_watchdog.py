"""The watchdog: one coroutine per runtime, woken by events and by a timer.

Each pass it beats its heartbeat (gates refuse to resume work once the heartbeat is older
than ``watchdog_liveness``), and for every live run: checks the wall-time budget,
re-decides live steps after a policy epoch change, renews leases that are still allowed,
re-verifies lease signatures round-robin (each live lease about once per two lease
lifetimes, at most ``verify_per_tick`` per pass: never a signature per await), and
re-measures the attested code and policy files every ``attest_interval``.

Before any renewal in a pass it also stats (cheaply: ``mtime_ns``, ``ctime_ns``, size,
inode) the signing key file, when the key was loaded from one, and — with
``watch_policies`` — the watched policy path and files:

- a key file that went missing, became unreadable or corrupt stops every live run with
  :class:`GovernanceUnavailable` (check ``key.renewal``); one that now holds a *different*
  valid key stops them with :class:`SignatureInvalid` (check ``key.renewal``): leases are
  never renewed under a key the runtime can no longer vouch for;
- a changed policy file is reloaded through :meth:`Runtime.reload_policies_async`, in a
  task of the watchdog's own: the file is parsed and compiled in a worker thread while
  passes go on (a 5,000-rule file never stalls the loop), and only the swap runs on the
  loop; one that no longer loads (garbage, deleted) stops every live run with
  ``GovernanceUnavailable`` (check ``policy.reload``) unless ``keep_last_good_policy``.
  While a watched reload is under way the attestation re-measure waits for it, so a watched
  file's change is reported as a reload (or a refused reload), not as an
  ``AttestationMismatch``.

It also applies revocation requests that other processes dropped in
``<evidence_dir>/.revocations`` (``tenure revoke``; see ``_revocations``): a live run or
lease named by one is revoked as by :meth:`Runtime.revoke`; a request folder that exists
but cannot be read stops every live run (check ``revocation.source``).

For a run that stopped, the watchdog keeps the cleanup grace: it wakes when the grace ends
and has the run abandon every task still running (see ``kernel._gate``).

Invariant: if the watchdog itself fails, every live run stops with
:class:`GovernanceUnavailable` — a dead watchdog never means "no more checks".
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from time import monotonic
from typing import TYPE_CHECKING, Protocol

import anyio
from anyio.abc import TaskGroup

from ..._errors import GovernanceUnavailable, GovernanceViolation, SignatureInvalid
from ...crypto import SigningKey, load_signing_key
from ...evidence._measure import _Stat, _stat
from ...policies import PolicyError

if TYPE_CHECKING:
    from .._config import RuntimeConfig
    from ..kernel._authority import LeaseAuthority
    from ..kernel._state import GovState, LeaseState
    from ._revocations import RevocationRequest, RevocationSource

__all__ = ["Watchdog", "WatchdogHost", "WatchedRun"]

_log = logging.getLogger("tenure.watchdog")

_BACKLOG_WAIT = 0.01  # seconds until the next pass while renewals are still due


def _stats(paths: Iterable[Path]) -> tuple[_Stat | None, ...]:
    return tuple(_stat(p) for p in paths)


class WatchedRun(Protocol):
    """A live run as the watchdog sees it."""

    @property
    def id(self) -> str:
        """The run id."""
        ...

    @property
    def stop(self) -> GovernanceViolation | None:
        """The run's stop, if it stopped."""
        ...

    @property
    def cancelled_reason(self) -> str | None:
        """Why the run's caller cancelled it, if it did."""
        ...

    @property
    def leases(self) -> Mapping[str, LeaseState]:
        """The run's live leases."""
        ...

    def watchdog_pass(self, now: float) -> bool:
        """Renew what is still allowed; check ttl and the wall-time budget.

        Returns whether renewals are still due (the watchdog comes back sooner)."""
        ...

    def enforce_grace(self, now: float) -> float | None:
        """A stopped run: abandon what outlived the cleanup grace; when to call again."""
        ...

    def fail(self, exc: GovernanceViolation) -> GovernanceViolation:
        """Stop the run fail closed."""
        ...


class WatchdogHost(Protocol):
    """What the watchdog may ask of the runtime it guards."""

    @property
    def policy_source(self) -> Path | None:
        """The watched policy path, if policies came from one."""
        ...

    def live_runs(self) -> Sequence[WatchedRun]:
        """The runs that are live now."""
        ...

    def watched_policy_paths(self) -> tuple[Path, ...]:
        """The policy path and every file it loaded."""
        ...

    async def reload_policies_async(self, path: Path) -> None:
        """Reload the policy set, parsed off the loop (raises ``PolicyError`` / ``OSError``)."""
        ...

    def apply_request(self, request: RevocationRequest) -> bool:
        """Apply a revocation request; whether this runtime held its target."""
        ...

    def check_attestation(self) -> None:
        """Re-measure code and policy files; a change stops every live run."""
        ...

    def stop_all(self, violation: Callable[[], GovernanceViolation]) -> None:
        """Stop every live run with its own ``violation()``."""
        ...


class Watchdog:
    """See the module docstring."""

    def __init__(
        self,
        host: WatchdogHost,
        *,
        config: RuntimeConfig,
        gov: GovState,
        key: SigningKey,
        authority: LeaseAuthority,
        revocations: RevocationSource | None,
    ) -> None:
        self._host = host
        self._config = config
        self._gov = gov
        self._key = key
        self._authority = authority
        self._revocations = revocations
        self._wake = anyio.Event()
        self._last_attest = monotonic()
        self._verify_cursor = itertools.count()
        self.passes = 0
        # When to come back before the timer: the soonest end of a stopped run's cleanup
        # grace, or soon while renewals are left over (monotonic).
        self._next_grace: float | None = None
        self._key_path = key.path
        self._key_stat = _stat(self._key_path) if self._key_path is not None else None
        self._policy_stat = self._policy_stats()
        self._reloading = False
        self._tasks: TaskGroup | None = None

    def _policy_stats(self) -> tuple[_Stat | None, ...]:
        return _stats(self._host.watched_policy_paths()) if self._config.watch_policies else ()

    def wake(self) -> None:
        """Ask for a pass as soon as the loop turns (revocation, reload, attestation)."""
        self._wake.set()

    def beat(self) -> None:
        """Refresh the heartbeat that every gate checks."""
        self._gov.set_heartbeat(monotonic() + self._config.watchdog_liveness)

    async def run(self) -> None:
        """The watchdog task body (never returns while the runtime is open)."""
        async with anyio.create_task_group() as self._tasks:
            await self._passes()
            self._tasks.cancel_scope.cancel()  # crashed: a reload under way is moot

    async def _passes(self) -> None:
        cancelled = anyio.get_cancelled_exc_class()
        try:
            self.beat()
            while True:
                wait = self._config.watchdog_interval
                if self._next_grace is not None:
                    wait = max(0.0, min(wait, self._next_grace - monotonic()))
                with anyio.move_on_after(wait):
                    await self._wake.wait()
                self._wake = anyio.Event()
                self.beat()
                self.tick()
        except cancelled:
            raise
        except BaseException as exc:  # any crash: fail closed, never keep running unwatched
            self._crashed(exc)
            if not isinstance(exc, Exception):
                raise

    def _crashed(self, exc: BaseException) -> None:
        self._gov.set_heartbeat(float("-inf"))
        reason = f"the watchdog crashed: {type(exc).__name__}: {exc}"
        self._host.stop_all(
            lambda: GovernanceUnavailable(reason, check="watchdog.crashed", source="watchdog")
        )

    def tick(self) -> None:
        """One pass over every live run."""
        self.passes += 1
        self.check_key()
        self.check_requests()
        if self._config.watch_policies:
            self.check_policies()
        now = monotonic()
        # A watched reload under way is reported as a reload, not as changed attested input.
        attest_due = not self._reloading and now - self._last_attest >= self._config.attest_interval
        if attest_due:
            self._last_attest = now
        self._next_grace = None
        for run in self._host.live_runs():
            if run.stop is not None or run.cancelled_reason is not None:
                due = run.enforce_grace(now)
                if due is not None and (self._next_grace is None or due < self._next_grace):
                    self._next_grace = due
                continue
            if run.watchdog_pass(now):
                self._next_grace = now + _BACKLOG_WAIT  # renewals left: come back soon
            if run.stop is None:
                self._reverify(run)
            if attest_due and run.stop is None:
                self._host.check_attestation()
                attest_due = False

    def check_requests(self) -> None:
        """Apply revocation requests made by other processes (``tenure revoke``)."""
        source = self._revocations
        if source is None or not self._host.live_runs():
            return
        try:
            requests = source.poll()
        except OSError as exc:
            # A kill request may be sitting where it cannot be read: fail closed.
            reason = f"cannot read revocation requests: {exc}"
            self._host.stop_all(
                lambda: GovernanceUnavailable(reason, check="revocation.source", source="watchdog")
            )
            return
        for request in requests:
            if self._host.apply_request(request):
                try:
                    source.done(request)
                except OSError as exc:  # applied and recorded; only the cleanup failed
                    _log.warning("revocation request %s applied, not removed: %s", request, exc)

    def check_key(self) -> None:
        """Stop every live run if the key file changed to something other than the key."""
        path = self._key_path
        if path is None or not self._host.live_runs():
            return
        st = _stat(path)
        if st is not None and st == self._key_stat:
            return
        problem: tuple[type[GovernanceViolation], str] | None = None
        if st is None:
            problem = (
                GovernanceUnavailable,
                (
                    f"{path}: the signing key file is missing or cannot be stat'ed: leases "
                    "are not renewed under a key the runtime can no longer vouch for"
                ),
            )
        else:
            try:
                key = load_signing_key(path, create=False)
            except GovernanceUnavailable as exc:
                problem = (
                    GovernanceUnavailable,
                    f"the signing key file changed and no longer loads: {exc.reason}",
                )
            else:
                if key.key_id != self._key.key_id:
                    problem = (
                        SignatureInvalid,
                        (
                            f"{path} now holds key {key.key_id}, not the key {self._key.key_id} "
                            "this runtime signs with: restart the runtime to rotate keys"
                        ),
                    )
                else:
                    self._key_stat = st  # same key, file touched or rewritten
        if problem is not None:
            cls, reason = problem
            self._host.stop_all(lambda: cls(reason, check="key.renewal", source="watchdog"))

    def check_policies(self) -> None:
        """Start reloading the watched policy path if its files changed (stat only otherwise)."""
        if self._reloading or self._tasks is None:
            return
        seen = self._policy_stats()
        if seen == self._policy_stat:
            return
        source = self._host.policy_source
        assert source is not None
        self._reloading = True
        self._tasks.start_soon(self._reload_watched, source, seen)

    async def _reload_watched(self, source: Path, seen: tuple[_Stat | None, ...]) -> None:
        paths = self._host.watched_policy_paths()
        try:
            await self._host.reload_policies_async(source)
        except (PolicyError, OSError):
            # The reload stopped every live run (or kept the last good set). Unless the last
            # good set is kept, the broken state is retried each pass, so a run started while
            # the watched policy does not load is stopped at the next pass too.
            if not self._config.keep_last_good_policy:
                return
        except Exception as exc:  # a crash in the reload is the watchdog's: fail closed
            self._crashed(exc)
            if self._tasks is not None:
                self._tasks.cancel_scope.cancel()  # no more passes: it stays crashed
            return
        finally:
            self._reloading = False
            self.wake()
        # What was read is the state stat'ed before the read (a change made while it was
        # parsed is another reload); a reload that brought new files stats those now.
        same_files = self._host.watched_policy_paths() == paths
        self._policy_stat = seen if same_files else self._policy_stats()

    def _reverify(self, run: WatchedRun) -> None:
        leases = [s for s in run.leases.values() if s.active and not s.revoked]
        if not leases:
            return
        # Each live lease about once per two lease lifetimes, within the per-tick ceiling:
        # every renewal also checks that a lease's claims, payload and envelope agree.
        cfg = self._config
        share = len(leases) * cfg.watchdog_interval / (2 * cfg.lease_seconds)
        budget = min(cfg.verify_per_tick, max(1, math.ceil(share)))
        start = next(self._verify_cursor) * budget
        batches: set[int] = set()  # a fan-out's leases share one batch signature: one check
        for k in range(min(budget, len(leases))):
            if not self.verify_lease(run, leases[(start + k) % len(leases)], batches):
                return

    def verify_lease(
        self, run: WatchedRun, state: LeaseState, batches: set[int] | None = None
    ) -> bool:
        """Re-verify one live lease's signature and narrowing; a failure stops the run.

        ``batches``: the lease batches whose signature this pass checked already.

        A child is checked against the parent generation its claims bind (``bound``), which
        must be a generation of its parent lease: a parent renewed since then is not a
        reason to distrust the child.
        """
        parent = state.bound
        try:
            if state.parent is not None and (parent is None or parent.id != state.parent.id):
                raise SignatureInvalid(
                    f"lease {state.id} is bound to {parent!r}, not to a generation of its "
                    f"parent lease {state.parent.id}",
                    check="lease.narrowing",
                )
            self._authority.verify_lease(state.lease, parent=parent, batches=batches)
        except SignatureInvalid as exc:
            exc.run_id, exc.lease_id = run.id, state.id
            run.fail(exc)
            return False
        except GovernanceViolation as exc:
            run.fail(exc)
            return False
        return True
