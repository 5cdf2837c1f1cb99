"""The :class:`Runtime`: starts governed runs and holds the governance state they share.

Lifecycle: ``Runtime(...)`` only stores configuration; ``async with`` loads the policy set
and the signing key, measures the environment once (in a worker thread), and starts the
watchdog task and the stall-detector thread. Each run lives in the runtime's task group
inside its own cancel scope, so stopping one run never disturbs another.

``revoke`` is synchronous: when it returns, the run's stop flag is set (no governed task of
it resumes) and its cancel scope is cancelled (sleeping tasks wake at once).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import secrets
import weakref
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio
from anyio.abc import TaskGroup
from opentelemetry.trace import TracerProvider

from .._checks import check_principal, check_scopes, check_ttl
from .._errors import GovernanceUnavailable, GovernanceViolation
from .._util import final
from .._version import __version__
from ..agents._decorators import Agent, Tool, registered
from ..crypto import SigningKey, b64e, load_signing_key
from ..evidence._attest import Attestor, CodeItem
from ..evidence._certs import CERT_NAME
from ..evidence._copies import SharedCopy
from ..evidence._fork import ForkingLedger
from ..evidence._format import (
    ATTESTATION,
    RUN_START,
    SEGMENT_START,
    WITNESS_DIR,
    budgets_record,
)
from ..evidence._ledger import Ledger
from ..evidence._ledger_io import LedgerConfig
from ..lineage._spans import Lineage
from ..policies import BudgetTracker, PolicySet
from ._config import RuntimeConfig
from ._controls import RuntimeControls, load_policies
from ._handle import RunHandle
from .backends import Backend, open_backend
from .backends._board import LinkBoard
from .backends._delegate import PoolDelegator
from .backends._link import BackendLink, SegmentLink
from .backends._segment import MirrorOps
from .isolation._runner import Isolation
from .kernel._authority import LeaseAuthority
from .kernel._control import RunServices
from .kernel._pace import Pacer
from .kernel._run import Run
from .kernel._state import GovState, value_digest
from .services._approval_folder import APPROVALS_DIR, ApprovalFolder
from .services._approvals import Approvals
from .services._commit import EvidenceCommits
from .services._revocations import (
    REVOCATIONS_DIR,
    FolderRevocations,
    RevocationSource,
)
from .services._stall import RuntimeIO, StallDetector
from .services._watchdog import Watchdog

__all__ = ["RunHandle", "Runtime"]

_MAX_SLICE_S = 0.02  # the runtime's own work per loop turn (see kernel._pace)


@final
class Runtime(RuntimeControls):
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
        backend: the shared governance backend (``"postgresql://..."``, or an open
            :class:`~tenure.runtime.backends.Backend`); default: ``TENURE_BACKEND`` if
            set, else none (everything stays in this process, exactly as without it).
            With one, revocations and policy epochs reach every host sharing it, and
            this process's authority ends on its own clock when the backend stops
            acknowledging its control-plane lease (``liveness_*`` in the config).
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
        backend: str | Backend | None = None,
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
        self._backend_arg: str | Backend | None = (
            backend if backend is not None else os.environ.get("TENURE_BACKEND") or None
        )
        self._link: BackendLink | None = None
        # A worker's member name, pool and what it declares about itself (see _pool).
        self._identity: tuple[str, str | None, dict[str, Any]] = ("", None, {})
        # segment name -> the delegated lease ids its run holds (a worker's parts of runs)
        self._delegated: dict[str, frozenset[str]] = {}
        # Set while the runtime is open (``async with``); ``_require`` guards their use.
        self._services: RunServices | None = None
        self._tg: TaskGroup | None = None
        self._stall: StallDetector | None = None
        self._watchdog: Watchdog | None = None
        self._runs: dict[str, Run] = {}
        self._code_cache: weakref.WeakKeyDictionary[Agent | Tool, CodeItem] = (
            weakref.WeakKeyDictionary()
        )
        self._policy_files: tuple[Path, ...] = ()
        self._budgets: tuple[PolicySet, dict[str, int | str]] | None = None
        # The policy path (file or folder) that ``watch_policies`` watches and reloads.
        self.policy_source: Path | None = (
            Path(policies) if isinstance(policies, str | Path) else None
        )

    # -- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Runtime:
        if self._services is not None:
            raise RuntimeError("this Runtime is already running")
        # Off the loop: another runtime on this loop may have live runs while a big set loads.
        policy = await anyio.to_thread.run_sync(load_policies, self._policies)
        key = (
            self._key_arg
            if isinstance(self._key_arg, SigningKey)
            else load_signing_key(Path(self._key_arg) if self._key_arg is not None else None)
        )
        attestor = Attestor(key)
        await anyio.to_thread.run_sync(attestor.environment)
        self._key = key
        self._key_copy = SharedCopy(key.public_pem)  # each run's tenure.pub (see _copies)
        self._attestor = attestor
        self._gov = GovState(policy)
        self._authority = LeaseAuthority(key, "tenure:" + secrets.token_hex(8))
        self._lineage = Lineage(self._tracer_provider, otlp_endpoint=self._otlp_endpoint)
        self._approvals = Approvals(key, self.config.approval_timeout, self._gov)
        self._isolation = Isolation(self.config)
        if self.config.approval_requests:
            self._approvals.folder = ApprovalFolder(self.evidence_dir / APPROVALS_DIR)
            self._approvals.poll_interval = self.config.watchdog_interval
        self._revocations: RevocationSource | None = None
        if self.config.revocation_requests:
            self._revocations = self._revocation_source or FolderRevocations(
                self.evidence_dir / REVOCATIONS_DIR
            )
        self._policy_files = tuple(policy.sources)
        watchdog = Watchdog(
            self,
            config=self.config,
            gov=self._gov,
            key=key,
            authority=self._authority,
            revocations=self._revocations,
        )
        self._commits = EvidenceCommits()
        self._services = RunServices(
            config=self.config,
            gov=self._gov,
            authority=self._authority,
            lineage=self._lineage,
            approvals=self._approvals,
            isolation=self._isolation,
            wake_watchdog=watchdog.wake,
            pacer=Pacer(min(_MAX_SLICE_S, self.config.stall_bound / 50)),
            close_ledger=self._commits.close,
        )
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        self._watchdog = watchdog
        tg.start_soon(watchdog.run)
        self._stall = StallDetector(self.config, self.live_runs)
        tg.start_soon(self._stall.heartbeat)
        self._stall.start()
        if self._backend_arg is not None:
            try:
                await self._connect_backend(tg, policy)
            except BaseException:
                await self.__aexit__(None, None, None)
                raise
        return self

    async def _connect_backend(self, tg: TaskGroup, policy: PolicySet) -> None:
        """Join the shared backend (fail closed: the runtime does not open without it)."""
        arg = self._backend_arg
        backend = await open_backend(arg) if isinstance(arg, str) else arg
        assert backend is not None
        cfg = self.config
        name, pool, info = self._identity
        info = {**info}
        if "certificate" not in info:
            certificate = _certificate_beside(self._key)
            if certificate is not None:
                info["certificate"] = certificate
        link = BackendLink(
            backend,
            self,
            self._gov.set_control,
            ttl=cfg.liveness_ttl,
            margin=cfg.liveness_margin,
            interval=cfg.liveness_interval,
            name=name,
            pool=pool,
            info={**info, "key": self._key.key_id, "pubkey": b64e(self._key.public_raw)},
        )
        try:
            await link.start(tg)
            await link.share_policy(policy)
        except BaseException:
            await link.stop()
            raise
        self._link = link
        services = self._require()
        self._approvals.board = LinkBoard(link)
        self._services = dataclasses.replace(
            services,
            remote=PoolDelegator(
                link,
                self._key,
                self._lineage,
                self._code_digest,
                lambda name: self._delegated.get(name, ()),
            ),
            start_step=link.start_step,
            step_left=link.step_left,
        )

    def _code_digest(self, agent: Agent) -> str:
        """The measured code digest of ``agent`` (what a worker must match)."""
        item = self._code_cache.get(agent)
        if item is None:
            item = self._code_cache[agent] = CodeItem.of(agent.kind, agent.name, agent.func)
        return item.digest

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        self._require()
        tg = self._tg
        assert tg is not None
        for run in list(self._runs.values()):
            run.cancel("the runtime was closed while the run was live")
        with anyio.CancelScope(shield=True):
            for run in list(self._runs.values()):
                with anyio.move_on_after(5):
                    await run.done.wait()
        link, self._link = self._link, None
        if link is not None:
            await link.drain()
            await link.stop()
        tg.cancel_scope.cancel()
        failure: GovernanceUnavailable | None = None
        try:
            # The block's own exception is not handed to the group: it leaves this block as
            # itself, never wrapped in an ExceptionGroup (the services are cancelled anyway).
            await tg.__aexit__(None, None, None)
        except BaseExceptionGroup as group:
            failure = _background_failure(group)
        finally:
            if self._stall is not None:
                self._stall.stop()
            self._commits.shutdown()
            self._isolation.close()
            self._lineage.shutdown()
            self._services = None
            self._watchdog = None
            self._tg = None
        if failure is not None and (
            exc is None or isinstance(exc, anyio.get_cancelled_exc_class())
        ):
            # A service failure cancels the group's scope, the block's code included: that
            # cancellation is this failure, not the caller's.
            raise failure from exc
        return None

    def _require(self) -> RunServices:
        if self._services is None:
            raise RuntimeError("use `async with Runtime(...) as rt:` before starting runs")
        return self._services

    # -- what the watchdog and the stall detector may ask (their host Protocols) -----------

    def live_runs(self) -> list[Run]:
        """The runs that are live now."""
        return list(self._runs.values())

    def watched_policy_paths(self) -> tuple[Path, ...]:
        """The policy path ``watch_policies`` watches, then each file it loaded."""
        source = self.policy_source
        if source is None:
            return ()
        return (source, *(f for f in self._policy_files if f != source))

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
        services = self._require()
        self._refuse_governed_caller("rt.start (or rt.run)")
        if services.pacer.due():
            await services.pacer.pace()  # many runs started at once share the loop's turns
        if not isinstance(agent, Agent):
            raise TypeError(f"Runtime.start expects an @agent, got {agent!r}")
        # Every argument is checked before a run directory or a file descriptor exists.
        principal = check_principal(principal)
        granted = check_scopes(scopes)
        ttl = check_ttl(ttl)
        agent.bind(args, kwargs)  # a wrong call is the caller's mistake: TypeError here
        run_id = "run_" + secrets.token_hex(8)
        run = await self._open(agent, args, kwargs, principal, granted, ttl, run_id, run_id)
        return RunHandle._create(run, self._link)

    async def _open(
        self,
        agent: Agent,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        principal: str,
        granted: frozenset[str],
        ttl: float,
        run_id: str,
        name: str,
        segment: SegmentLink | None = None,
    ) -> Run:
        """Open a run's evidence in ``evidence_dir/<name>`` and start driving it.

        ``name`` is the run id, or for a part of a run delegated to this process its
        segment id; ``segment`` then says where the part came from (recorded first).
        """
        services = self._require()
        policy = self._gov.policy
        code, attested = self._code_items()
        envelope, att_digest = self._attestor.sign_run(
            code, policy.digest, self._policy_files, self._config_record
        )
        run_dir = self.evidence_dir / name
        link = self._link
        mirror = MirrorOps() if link is not None else None
        # With a backend a step's start is chained once the backend took its debit: forked.
        ledger = (Ledger if link is None else ForkingLedger).create(
            run_dir,
            run_id,
            self._key,
            LedgerConfig(
                checkpoint_every=self.config.checkpoint_every,
                checkpoint_interval=self.config.checkpoint_interval,
                fsync=self.config.fsync,
            ),
            # A part of a run shares the run id with the others: its witness copy is kept
            # apart by segment, so two parts never overwrite each other's.
            self.evidence_dir / WITNESS_DIR / (name if segment is not None else ""),
            file_ops=RuntimeIO(self._stall, mirror),
            key_copy=self._key_copy,
        )
        span = self._lineage.start_run(run_id, agent.name, principal, policy.digest, att_digest)
        run = Run(
            services,
            run_id=run_id,
            agent=agent,
            args=args,
            kwargs=kwargs,
            principal=principal,
            scopes=granted,
            ttl=ttl,
            ledger=ledger,
            tracker=BudgetTracker(policy.budgets, policy.rate_limits),
            span=span,
            attestation=att_digest,
            code=code,
        )
        run.attested = attested
        run.write_attestation = functools.partial(
            self._attestor.write, run_dir, envelope, durable=self.config.fsync == "record"
        )
        try:
            run.record(
                RUN_START,
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
                    "key": self._key.key_id,
                    "pubkey": b64e(self._key.public_raw),
                    "runtime": __version__,
                    "config": self._config_record,
                    "budgets": self._budgets_record(policy),
                },
                flush=False,
            )
            # The attestation reaches the OS with run.start, before anything of the run runs,
            # in the ledger (durable and signed with its records); the run's
            # attestation.intoto.json, for in-toto tools, is written out at close, off the loop.
            run.record(ATTESTATION, {"envelope": envelope})
            if segment is not None:
                run.record(SEGMENT_START, segment.record())
        except GovernanceViolation:
            ledger.close()  # failed: only releases the file
            raise
        if link is not None and mirror is not None:
            assert isinstance(ledger, ForkingLedger)
            try:
                await link.open_segment(run, name, mirror, ledger, segment, self._key)
            except GovernanceViolation as exc:
                ledger.abort(exc.check, exc.reason)
                raise
        self._runs[name] = run
        assert self._tg is not None
        self._tg.start_soon(run.drive, self._forget)
        return run

    def _budgets_record(self, policy: PolicySet) -> dict[str, int | str]:
        """``run.start``'s ``budgets`` of ``policy`` (built once per policy set in force)."""
        cached = self._budgets
        if cached is None or cached[0] is not policy:
            cached = self._budgets = (policy, budgets_record(policy.budgets.model_dump()))
        return cached[1]

    def _forget(self, run: Run) -> None:
        name = run.ledger.run_dir.name
        self._runs.pop(name, None)
        self._delegated.pop(name, None)
        self._authority.forget_run(run.leases)
        if self._link is not None:
            self._link.close_segment(name)

    def _code_items(self) -> tuple[Sequence[CodeItem], frozenset[Agent | Tool]]:
        """Code items of every registered agent and tool (hashed once per runtime each),
        and those agents and tools: the only ones a run attested at its start may run."""
        items = []
        objects = registered()
        for obj in objects:
            item = self._code_cache.get(obj)
            if item is None:
                item = CodeItem.of(obj.kind, obj.name, obj.func)
                self._code_cache[obj] = item
            items.append(item)
        return items, frozenset(objects)


def _background_failure(group: BaseExceptionGroup[BaseException]) -> GovernanceUnavailable:
    """The runtime's own task failures, as the one error ``async with`` raises for them."""
    causes = "; ".join(f"{type(e).__name__}: {e}" for e in group.exceptions)
    failure = GovernanceUnavailable(
        f"the runtime's background services failed: {causes}",
        check="runtime.services",
        source="runtime",
    )
    failure.__cause__ = group
    return failure


def _certificate_beside(key: SigningKey) -> Any:
    """The operator's certificate kept beside the key file (``tenure.cert``), if any."""
    if key.path is None:
        return None
    path = key.path.parent / CERT_NAME
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise GovernanceUnavailable(
            f"{path}: the key's certificate cannot be read: {exc}",
            check="key.certificate",
            source="runtime",
        ) from exc
