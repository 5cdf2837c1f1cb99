"""The :class:`Runtime`: starts governed runs and holds the governance state they share.

Lifecycle: ``Runtime(...)`` only stores configuration; ``async with`` loads the policy set
and the signing key, measures the environment once (in a worker thread), and starts the
watchdog task and the stall-detector thread. Each run lives in the runtime's task group
inside its own cancel scope, so stopping one run never disturbs another.

``revoke`` is synchronous: when it returns, the run's stop flag is set (no governed task of
it resumes) and its cancel scope is cancelled (sleeping tasks wake at once).
"""

from __future__ import annotations

import secrets
import weakref
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio
from anyio.abc import TaskGroup
from opentelemetry.trace import TracerProvider

from .._errors import GovernanceUnavailable, GovernanceViolation, LeaseRevoked
from .._util import NoPublicConstructor
from ..agents._decorators import Agent, Tool, registered
from ..crypto._canonical import b64e
from ..crypto._keys import SigningKey, load_signing_key
from ..evidence._attest import Attestor, CodeItem
from ..evidence._ledger import Ledger, LedgerConfig
from ..lineage._spans import Lineage
from ..policies import BudgetTracker, PolicyError, PolicySet
from ._config import RuntimeConfig
from .isolation._runner import Isolation
from .kernel._lease import LeaseAuthority
from .kernel._run import Run
from .kernel._state import GovState, value_digest
from .services._approvals import ApprovalRequest, Approvals
from .services._revocations import (
    REVOCATIONS_DIR,
    FolderRevocations,
    RevocationRequest,
    RevocationSource,
)
from .services._stall import StallDetector
from .services._watchdog import Watchdog

__all__ = ["RunHandle", "Runtime"]

_VERSION = "0.1.0"


class _Engine:
    """Internals shared by the runtime, its runs and its watchdog."""

    def __init__(
        self,
        config: RuntimeConfig,
        key: SigningKey,
        policy: PolicySet,
        lineage: Lineage,
        attestor: Attestor,
    ) -> None:
        self.config = config
        self.key = key
        self.gov = GovState(policy)
        self.authority = LeaseAuthority(key, "tenure:" + secrets.token_hex(8))
        self.lineage = lineage
        self.attestor = attestor
        self.approvals = Approvals(key, config.approval_timeout)
        self.isolation = Isolation(config)
        self.revocations: RevocationSource | None = None
        self.runs: dict[str, Run] = {}
        self.watchdog: Watchdog | None = None
        self.code_cache: weakref.WeakKeyDictionary[Agent | Tool, CodeItem] = (
            weakref.WeakKeyDictionary()
        )

    def stop_all(self, violation: Callable[[], GovernanceViolation]) -> None:
        """Stop every live run, each with its own ``violation()`` (an error names its run)."""
        for run in list(self.runs.values()):
            run.fail(violation())

    def wake_watchdog(self) -> None:
        if self.watchdog is not None:
            self.watchdog.wake()

    def live_task_count(self) -> int:
        return sum(len(run.steps) for run in self.runs.values())


class RunHandle(metaclass=NoPublicConstructor):
    """A started run: its id, where its evidence is, and its outcome (``rt.start`` makes it)."""

    __slots__ = ("_run",)

    def __init__(self, run: Run) -> None:
        self._run = run

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
        """Wait for the end; return the root agent's result or raise why it stopped."""
        await self._run.done.wait()
        run = self._run
        if run.stop is not None:
            raise run.stop_error()
        if run.error is not None:
            raise run.error
        return run.result

    def cancel(self, reason: str = "cancelled by its caller") -> None:
        """Stop the run without a violation (recorded as cancelled)."""
        self._run.cancel(reason)


class Runtime:
    """Runs agents under signed leases, live policy and an evidence ledger.

    Args:
        policies: a policy file, a folder of ``*.toml``, or a :class:`PolicySet`;
            default: the packaged ``default.toml``.
        evidence_dir: where each run writes ``<run_id>/`` (default ``./runs``).
        key: a :class:`SigningKey` or a private key file; default: the per-user key,
            created on first use outside the evidence directory.
        tracer_provider: your OpenTelemetry provider (else one from the ``OTEL_*``
            variables or ``otlp_endpoint``; none configured = no exporter, no traffic).
        config: a :class:`RuntimeConfig`; keyword overrides of its fields are accepted too.
        revocation_source: where revocation requests from other processes come from
            (a :class:`RevocationSource`); default: the ``.revocations`` folder under
            ``evidence_dir``, read while ``revocation_requests`` is on.
    """

    def __init__(
        self,
        *,
        policies: str | Path | PolicySet | None = None,
        evidence_dir: str | Path = "runs",
        key: SigningKey | str | Path | None = None,
        tracer_provider: TracerProvider | None = None,
        otlp_endpoint: str | None = None,
        config: RuntimeConfig | None = None,
        revocation_source: RevocationSource | None = None,
        **overrides: Any,
    ) -> None:
        base = config or RuntimeConfig()
        self.config = base.model_validate({**base.model_dump(), **overrides}) if overrides else base
        # What every run attests and records; the config is frozen, so computed once.
        self._config_record = self.config.public()
        self.evidence_dir = Path(evidence_dir)
        self._policies = policies
        self._key_arg = key
        self._tracer_provider = tracer_provider
        self._otlp_endpoint = otlp_endpoint
        self._revocation_source = revocation_source
        self._engine: _Engine | None = None
        self._tg: TaskGroup | None = None
        self._stall: StallDetector | None = None
        self._policy_files: tuple[Path, ...] = ()
        # The policy path (file or folder) that ``watch_policies`` watches and reloads.
        self.policy_source: Path | None = (
            Path(policies) if isinstance(policies, str | Path) else None
        )

    # -- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Runtime:
        if self._engine is not None:
            raise RuntimeError("this Runtime is already running")
        policy = _load_policies(self._policies)
        key = (
            self._key_arg
            if isinstance(self._key_arg, SigningKey)
            else load_signing_key(Path(self._key_arg) if self._key_arg is not None else None)
        )
        attestor = Attestor(key)
        await anyio.to_thread.run_sync(attestor.environment)
        lineage = Lineage(self._tracer_provider, otlp_endpoint=self._otlp_endpoint)
        engine = _Engine(self.config, key, policy, lineage, attestor)
        if self.config.revocation_requests:
            engine.revocations = self._revocation_source or FolderRevocations(
                self.evidence_dir / REVOCATIONS_DIR
            )
        self._policy_files = tuple(policy.sources)
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        self._engine = engine
        engine.watchdog = Watchdog(engine, self)
        tg.start_soon(engine.watchdog.run)
        self._stall = StallDetector(engine, self.config)
        tg.start_soon(self._stall.heartbeat)
        self._stall.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        engine, tg = self._require(), self._tg
        assert tg is not None
        for run in list(engine.runs.values()):
            run.cancel("the runtime was closed while the run was live")
        with anyio.CancelScope(shield=True):
            for run in list(engine.runs.values()):
                with anyio.move_on_after(5):
                    await run.done.wait()
        tg.cancel_scope.cancel()
        try:
            await tg.__aexit__(exc_type, exc, tb)
        finally:
            if self._stall is not None:
                self._stall.stop()
            engine.isolation.close()
            engine.lineage.shutdown()
            self._engine = None
            self._tg = None
        return None

    def _require(self) -> _Engine:
        if self._engine is None:
            raise RuntimeError("use `async with Runtime(...) as rt:` before starting runs")
        return self._engine

    # -- runs -----------------------------------------------------------------------------

    async def run(
        self,
        agent: Agent,
        /,
        *args: Any,
        principal: str,
        scopes: Iterable[str] = (),
        ttl: float = 60.0,
        **kwargs: Any,
    ) -> Any:
        """Run ``agent`` to completion; its result, or the violation that stopped it."""
        handle = await self.start(
            agent, *args, principal=principal, scopes=scopes, ttl=ttl, **kwargs
        )
        try:
            return await handle.result()
        except anyio.get_cancelled_exc_class():
            handle.cancel("cancelled by its caller")
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                await handle._run.done.wait()
            raise

    async def start(
        self,
        agent: Agent,
        /,
        *args: Any,
        principal: str,
        scopes: Iterable[str] = (),
        ttl: float = 60.0,
        **kwargs: Any,
    ) -> RunHandle:
        """Start ``agent`` as a new run and return its handle at once."""
        engine = self._require()
        if not isinstance(agent, Agent):
            raise TypeError(f"Runtime.start expects an @agent, got {agent!r}")
        if not isinstance(principal, str) or not principal:
            raise ValueError(f"principal must be a non-empty string, got {principal!r}")
        if isinstance(scopes, str):
            raise TypeError(f"scopes must be a set of strings, not the string {scopes!r}")
        if not ttl > 0:
            raise ValueError(f"ttl must be a positive number of seconds, got {ttl!r}")
        agent.bind(args, kwargs)  # a wrong call is the caller's mistake: TypeError here
        run_id = "run_" + secrets.token_hex(8)
        policy = engine.gov.policy
        code = _code_items(engine)
        envelope, att_digest = engine.attestor.sign_run(
            run_id, code, policy.digest, self._policy_files, self._config_record
        )
        run_dir = self.evidence_dir / run_id
        ledger = Ledger.create(
            run_dir,
            run_id,
            engine.key,
            LedgerConfig(
                checkpoint_every=self.config.checkpoint_every,
                checkpoint_interval=self.config.checkpoint_interval,
                fsync=self.config.fsync,
            ),
            self.evidence_dir / ".witness",
        )
        try:
            engine.attestor.write(run_dir, envelope, durable=self.config.fsync == "record")
        except OSError as exc:
            reason = f"cannot write the attestation in {run_dir}: {exc.strerror or exc}"
            ledger.abort("attestation.write", reason)
            raise GovernanceUnavailable(
                reason, run_id=run_id, check="attestation.write", source="attestation"
            ) from exc
        span = engine.lineage.start_run(run_id, agent.name, principal, policy.digest, att_digest)
        run = Run(
            engine,
            run_id=run_id,
            agent=agent,
            args=args,
            kwargs=kwargs,
            principal=principal,
            scopes=frozenset(scopes),
            ttl=ttl,
            ledger=ledger,
            tracker=BudgetTracker(policy.budgets, policy.rate_limits),
            span=span,
            attestation=att_digest,
        )
        run.code = code
        # Record times on the run's clock too (start wall time + monotonic elapsed): a
        # wall-clock jump mid-run then shifts no timestamp against the leases it is
        # checked against.
        ledger.clock = run.lease_clock_us
        run.record(
            "run.start",
            {
                "run": run_id,
                "principal": principal,
                "scopes": sorted(run.scopes),
                "ttl_ms": int(ttl * 1000),
                "deadline": run.hard_deadline_us,
                "agent": agent.name,
                "args": value_digest([args, kwargs]),
                "policy": policy.digest,
                "attestation": att_digest,
                "key": engine.key.key_id,
                "pubkey": b64e(engine.key.public_raw),
                "runtime": _VERSION,
                "config": self._config_record,
            },
        )
        run.record("attestation", {"envelope": envelope}, flush=False)
        engine.runs[run_id] = run
        assert self._tg is not None
        self._tg.start_soon(self._drive, run)
        return RunHandle._create(run)

    async def _drive(self, run: Run) -> None:
        engine = self._require()
        try:
            with anyio.CancelScope(deadline=run.hard_deadline) as scope:
                run.scope = scope
                if run.stop is not None:
                    scope.cancel()
                async with anyio.create_task_group() as tg:
                    run.tg = tg
                    run.result = await run.invoke_agent(None, run.agent, run.args, run.kwargs)
        except BaseException as exc:  # classified below; the run's outcome, not a crash
            _classify(run, exc)
        finally:
            run.tg = None
            if (
                run.stop is None
                and run.error is None
                and run.scope is not None
                and run.scope.cancelled_caught
            ):
                _classify(run, anyio.get_cancelled_exc_class()())
            _finish(run)
            engine.runs.pop(run.id, None)
            engine.authority.forget_run(run.leases)
            run.done.set()

    # -- governance controls --------------------------------------------------------------

    def revoke(self, run_or_lease_id: str, reason: str = "revoked") -> None:
        """Revoke a run (its root lease) or one lease; takes effect before this returns."""
        if not self._revoke(run_or_lease_id, reason, "revoke"):
            raise KeyError(f"no live run or lease with id {run_or_lease_id!r}")

    def _holder(self, target: str) -> Run | None:
        """The live run whose id, or one of whose leases' ids, is ``target``."""
        engine = self._require()
        return engine.runs.get(target) or next(
            (run for run in engine.runs.values() if target in run.leases), None
        )

    def _revoke(self, target: str, reason: str, by: str) -> bool:
        """Revoke ``target`` if a live run or lease of this runtime has that id."""
        run = self._holder(target)
        if run is None:
            return False
        if target != run.id:
            run.revoke_lease(target, reason, by)
        elif run.leases:
            run.revoke_lease(next(iter(run.leases)), reason, by)
        else:  # revoked before its root lease was issued (e.g. waiting for approval)
            run.fail(LeaseRevoked(f"revoked: {reason}", check="lease.revoked", source=by))
        return True

    def apply_request(self, request: RevocationRequest) -> bool:
        """Apply a revocation request made outside this process (see ``_revocations``).

        Returns whether this runtime held the target (then the request is spent).
        """
        run = self._holder(request.target)
        if run is None:
            return False
        if run.stop is None:  # a run already stopping does not record a second revocation
            self._revoke(request.target, request.reason, f"request:{request.by}")
        return True

    def reload_policies(self, path_or_policyset: str | Path | PolicySet) -> None:
        """Swap the policy set: bump the epoch and re-decide every live step at once.

        An invalid file stops every live run (fail closed) and raises the
        :class:`PolicyError`, unless ``keep_last_good_policy`` is set, in which case the
        previous set stays in force and the error is raised. Live runs keep their counters
        but are held to the new set's budgets from now on (rate-limit windows are kept as
        they were at the run's start).
        """
        engine = self._require()
        try:
            policy = _load_policies(path_or_policyset)
        except (PolicyError, OSError) as exc:
            if not self.config.keep_last_good_policy:
                reason = f"policy reload refused: {exc}"
                engine.stop_all(
                    lambda: GovernanceUnavailable(
                        reason, check="policy.reload", source="policy-reload"
                    )
                )
            raise
        engine.attestor.baseline_policy(policy.digest, policy.sources)
        engine.gov.policy = policy
        engine.gov.epoch += 1
        if not isinstance(path_or_policyset, PolicySet):
            self._policy_files = tuple(policy.sources)
            self.policy_source = Path(path_or_policyset)
        for run in list(engine.runs.values()):
            run.span.event(
                "tenure.policy.reloaded", {"policy": policy.digest, "epoch": engine.gov.epoch}
            )
            run._record_quietly(
                "policy.reloaded", {"policy": policy.digest, "epoch": engine.gov.epoch}
            )
            run.tracker.budgets = policy.budgets  # live runs count against the new limits
            run.revalidate()
        engine.wake_watchdog()

    def pending_approvals(self) -> list[ApprovalRequest]:
        """Steps waiting for a person (oldest first)."""
        return self._require().approvals.pending()

    def approve(self, request_id: str, *, approver: str) -> None:
        """Approve a pending request (signed and recorded before the step resumes)."""
        self._require().approvals.approve(request_id, approver)

    def deny(self, request_id: str, *, approver: str, reason: str = "denied") -> None:
        """Deny a pending request: the waiting step raises :class:`PolicyDenied`."""
        self._require().approvals.deny(request_id, approver, reason)

    def check_attestation(self) -> None:
        """Re-measure code and policy files now; a change stops every live run."""
        engine = self._require()
        for run in list(engine.runs.values()):
            _remeasure(engine, run, self._policy_files)


def _load_policies(source: str | Path | PolicySet | None) -> PolicySet:
    if source is None:
        return PolicySet.default()
    if isinstance(source, PolicySet):
        return source
    return PolicySet.load(Path(source))


def _code_items(engine: _Engine) -> Sequence[CodeItem]:
    """Code items of every registered agent and tool (hashed once per runtime each)."""
    items = []
    for obj in registered():
        item = engine.code_cache.get(obj)
        if item is None:
            item = CodeItem.of(obj.kind, obj.name, obj.func)
            engine.code_cache[obj] = item
        items.append(item)
    return items


def _remeasure(engine: _Engine, run: Run, policy_files: Sequence[Path]) -> None:
    change = engine.attestor.remeasure(run.code, policy_files, None, engine.gov.policy.digest)
    if change is not None:
        run.fail(change.to_error(run_id=run.id))


def _classify(run: Run, exc: BaseException) -> None:
    if isinstance(exc, BaseExceptionGroup):
        leaves = list(_leaves(exc))
        violation = next((e for e in leaves if isinstance(e, GovernanceViolation)), None)
        other = next(
            (e for e in leaves if not isinstance(e, anyio.get_cancelled_exc_class())), None
        )
        exc = violation or other or leaves[0]
    if run.stop is not None:
        return
    if isinstance(exc, GovernanceViolation):
        if exc.run_id is None:
            exc.run_id = run.id
        if exc.source in ("policy", "approval"):
            run.stop = exc  # a refused root step: recorded already, nothing to cancel
            return
        run.fail(exc)
        return
    if isinstance(exc, anyio.get_cancelled_exc_class()):
        if run.cancelled_reason is None and run.stop is None:
            run.cancelled_reason = "cancelled"
        run.error = exc
        return
    run.error = exc


def _leaves(group: BaseExceptionGroup[BaseException]) -> Iterable[BaseException]:
    for e in group.exceptions:
        if isinstance(e, BaseExceptionGroup):
            yield from _leaves(e)
        else:
            yield e


def _finish(run: Run) -> None:
    """Record how the run ended and close its evidence (checkpoint, fsync)."""
    if run.stop is not None:
        fields = {
            "status": "violation",
            "error": type(run.stop).__name__,
            "check": run.stop.check,
            "reason": run.stop.reason,
            "result": "",
        }
    elif run.cancelled_reason is not None:
        fields = {
            "status": "cancelled",
            "error": "",
            "check": "",
            "reason": run.cancelled_reason,
            "result": "",
        }
    elif run.error is not None:
        fields = {
            "status": "error",
            "error": type(run.error).__name__,
            "check": "",
            "reason": str(run.error)[:500],
            "result": "",
        }
    else:
        fields = {
            "status": "ok",
            "error": "",
            "check": "",
            "reason": "",
            "result": value_digest(run.result),
        }
    run.span.end(run.stop or run.error)
    run.record_stopped()
    run._record_quietly("run.end", fields)
    try:
        run.ledger.close()
    except GovernanceViolation as exc:
        if run.stop is None and run.error is None:
            exc.run_id = run.id
            run.stop = exc
