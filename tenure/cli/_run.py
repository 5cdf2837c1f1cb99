"""``tenure run FILE:AGENT [ARGS…]`` and ``tenure demo``.

``run`` imports the user's file (by path; module name from the file name), finds the
``@agent``, parses each ARG as a JSON literal (else keeps it as a string; ``NAME=VALUE``
passes a keyword when NAME is one of the agent's parameters), validates each against the
parameter's annotation (pydantic: an ``int`` never receives ``"three"``, a pydantic-model
parameter gets the model), runs it under a :class:`~tenure.Runtime`, and prints the result.

An operator can steer it: the run id, the evidence path and the command that revokes the
run go to stderr at start; on a terminal a live display (:mod:`._progress`) shows steps,
tools, budgets and the agents running (never in a pipe, or with ``--quiet``); Ctrl-C stops
the run fail closed (recorded as cancelled) with one line; ``--json`` prints the outcome and
the verification verdict as JSON; ``--traceback`` shows the agent's own exception.

Exit codes: 0 the run ended ok; 1 governance stopped it (a violation, or Ctrl-C); 2 a usage
error, said in one line before anything runs (missing file, a file that fails to import, a
name that is not an ``@agent``, arguments that do not fit the agent's signature or types, a
missing or invalid policy, a bad ``--otlp``); 3 the agent itself raised.
"""

from __future__ import annotations

import json
import signal
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any

import anyio
import typer
from rich.console import Console
from rich.live import Live

from .._errors import GovernanceViolation, UsageError
from ..agents._decorators import Agent
from ..crypto import PUBLIC_KEY_NAME, default_key_dir
from ..policies import PolicyError, PolicySet
from ._target import check_evidence_dir, check_otlp, load_agent, load_policy, parse_args, show

__all__ = [
    "EXIT_AGENT_RAISED",
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "register",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_AGENT_RAISED = 3
_REFRESH_S = 0.1


def _fail(message: str, code: int) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _user_frames(exc: BaseException) -> list[traceback.FrameSummary]:
    """The frames of ``exc``'s traceback outside Tenure and the libraries it runs on."""
    skip = (str(Path(__file__).resolve().parents[1]), "site-packages", "/lib/python")
    return [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if not f.filename.startswith(skip) and not any(s in f.filename for s in skip[1:])
    ]


def _public_key_hint(key: Path | None) -> str:
    if key is None:
        return str(default_key_dir() / PUBLIC_KEY_NAME)
    if key.with_name(PUBLIC_KEY_NAME).is_file():  # the layout `tenure keys generate` writes
        return str(key.with_name(PUBLIC_KEY_NAME))
    return f"<the public key of {key}>"


async def _execute(
    agent_obj: Agent,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    policy: PolicySet,
    evidence_dir: Path,
    principal: str,
    scopes: list[str],
    ttl: float,
    otlp: str | None,
    key: Path | None,
    quiet: bool,
    as_json: bool,
    show_traceback: bool,
) -> int:
    from ..evidence import verify_run
    from ..runtime import Runtime
    from ._progress import Progress

    err = Console(stderr=True, highlight=False, soft_wrap=True)
    outcome: dict[str, Any] = {}
    code = EXIT_OK
    async with Runtime(
        policies=policy, evidence_dir=evidence_dir, key=key, otlp_endpoint=otlp
    ) as rt:
        handle = await rt.start(
            agent_obj, *args, principal=principal, scopes=set(scopes), ttl=ttl, **kwargs
        )
        outcome.update(run_id=handle.run_id, evidence=str(handle.evidence_path))
        if not quiet:
            err.print(
                f"run {handle.run_id} started; evidence: {handle.evidence_path}", markup=False
            )
            err.print(
                f"stop it with Ctrl-C, or: tenure revoke {handle.run_id} --reason REASON "
                f"--evidence-dir {evidence_dir}",
                markup=False,
                style="dim",
            )
        interrupted = anyio.Event()

        async def on_sigint() -> None:
            with anyio.open_signal_receiver(signal.SIGINT) as signals:
                async for _ in signals:
                    interrupted.set()
                    handle.cancel("interrupted by the operator (Ctrl-C)")
                    return

        progress = Progress(handle.evidence_path)
        live = (
            Live(progress.render(handle.run_id), console=err, transient=True, refresh_per_second=10)
            if err.is_terminal and not quiet
            else None
        )

        async def display() -> None:
            assert live is not None
            with live:
                while not handle.done:
                    progress.poll()
                    live.update(progress.render(handle.run_id))
                    await anyio.sleep(_REFRESH_S)

        result: Any = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(on_sigint)
            if live is not None:
                tg.start_soon(display)
            try:
                result = await handle.result()
                outcome.update(status="ok", result=result)
            except GovernanceViolation as exc:
                code = EXIT_FAILED
                outcome.update(
                    status="stopped", error=type(exc).__name__, check=exc.check, reason=exc.reason
                )
            except anyio.get_cancelled_exc_class():
                if not interrupted.is_set():
                    raise
                code = EXIT_FAILED
                outcome.update(status="cancelled", reason="interrupted by the operator (Ctrl-C)")
            except Exception as exc:
                code = EXIT_AGENT_RAISED
                frames = _user_frames(exc)
                where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
                outcome.update(
                    status="raised",
                    error=type(exc).__name__,
                    reason=str(exc),
                    where=where.removeprefix(" at "),
                )
                if show_traceback:
                    lines = traceback.format_list(frames) + traceback.format_exception_only(exc)
                    err.print(
                        "Traceback (the agent's own frames):\n" + "".join(lines),
                        markup=False,
                        end="",
                    )
            tg.cancel_scope.cancel()
    rep = verify_run(handle.evidence_path, rt_public(key))
    outcome.update(verdict=rep.verdict)
    if as_json:
        outcome["result"] = (
            outcome.get("result")
            if _jsonable(outcome.get("result"))
            else repr(outcome.get("result"))
        )
        typer.echo(json.dumps(outcome, ensure_ascii=False, sort_keys=True))
        return code
    status = outcome["status"]
    if status == "ok":
        typer.echo(f"result: {show(result)}")
    elif status == "stopped":
        err.print(
            f"error: {outcome['error']} (check={outcome['check']}): {outcome['reason']}",
            markup=False,
        )
    elif status == "cancelled":
        err.print(
            f"interrupted: run {handle.run_id} stopped fail closed (recorded as cancelled)",
            markup=False,
        )
    else:
        err.print(
            f"error: agent {agent_obj.name} raised {outcome['error']}: {outcome['reason']}"
            + (f" ({outcome['where']})" if outcome["where"] else "")
            + ("" if show_traceback else "; --traceback shows where"),
            markup=False,
        )
    typer.echo(f"evidence: {handle.evidence_path} ({rep.verdict})")
    typer.echo(f"verify with: tenure verify {handle.evidence_path} --key {_public_key_hint(key)}")
    return code


def rt_public(key: Path | None) -> Any:
    """The public key to verify the run with (``None``: the run directory's copy)."""
    from ..crypto import load_signing_key

    try:
        return load_signing_key(key, create=False).public_key
    except GovernanceViolation:
        return None


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


# Options `tenure run` and `tenure demo` share.
EvidenceDirOption = Annotated[Path, typer.Option("--evidence-dir", help="where run evidence goes")]
PolicyOption = Annotated[
    Path | None,
    typer.Option("--policy", help="policy file or folder (default: the packaged default policy)"),
]
OtlpOption = Annotated[
    str | None,
    typer.Option("--otlp", metavar="ENDPOINT", help="export lineage to an OTLP/HTTP endpoint"),
]


def run_command(
    target: Annotated[
        str, typer.Argument(metavar="FILE:AGENT", help="a Python file and the @agent in it")
    ],
    args: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="[ARGS]...",
            help="arguments for the agent: JSON literals, else strings; NAME=VALUE for a keyword",
        ),
    ] = None,
    principal: Annotated[
        str, typer.Option("--principal", "-p", help="who authorizes the run")
    ] = "",
    scope: Annotated[
        list[str] | None,
        typer.Option("--scope", "-s", help="a scope granted to the run (repeat for several)"),
    ] = None,
    policy: PolicyOption = None,
    evidence_dir: EvidenceDirOption = Path("runs"),
    ttl: Annotated[
        float, typer.Option("--ttl", min=0.001, help="seconds the principal authorizes the run")
    ] = 60.0,
    otlp: OtlpOption = None,
    key: Annotated[
        Path | None,
        typer.Option(
            "--key",
            metavar="PRIVATE_KEY",
            help="Ed25519 private key file (PEM) to sign with "
            "(default: the per-user key, or $TENURE_KEY_DIR/tenure.key)",
        ),
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="no start lines, no live display")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="print the outcome and the verdict as JSON")
    ] = False,
    show_traceback: Annotated[
        bool, typer.Option("--traceback", help="show the agent's own exception, file and line")
    ] = False,
) -> None:
    """Run an @agent from a file under governance; prints its result and evidence dir."""
    if not principal:
        raise _fail("--principal is required (who authorizes this run?)", EXIT_USAGE)
    try:
        check_evidence_dir(evidence_dir)
        check_otlp(otlp)
        agent_obj = load_agent(target)
        call_args, call_kwargs = parse_args(agent_obj, list(args or []))
        policy_set = load_policy(policy)
    except UsageError as exc:
        raise _fail(str(exc), EXIT_USAGE) from exc
    try:
        code = anyio.run(
            lambda: _execute(
                agent_obj,
                call_args,
                call_kwargs,
                policy=policy_set,
                evidence_dir=evidence_dir,
                principal=principal,
                scopes=list(scope or []),
                ttl=ttl,
                otlp=otlp,
                key=key,
                quiet=quiet,
                as_json=as_json,
                show_traceback=show_traceback,
            )
        )
    except GovernanceViolation as exc:  # before the run started (e.g. the signing key)
        raise _fail(f"{type(exc).__name__} (check={exc.check}): {exc.reason}", EXIT_FAILED) from exc
    raise typer.Exit(code)


def demo_command(
    evidence_dir: EvidenceDirOption = Path("runs"),
    policy: PolicyOption = None,
    otlp: OtlpOption = None,
) -> None:
    """The flagship demo: a governed research team, a denial, an approval, a revocation."""
    from ._demo import run_demo

    try:
        check_evidence_dir(evidence_dir)
        check_otlp(otlp)
    except UsageError as exc:
        raise _fail(str(exc), EXIT_USAGE) from exc
    if policy is not None:
        try:
            PolicySet.load(policy)
        except PolicyError as exc:
            raise _fail(f"policy {exc}", EXIT_USAGE) from exc
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
    try:
        outcome = anyio.run(
            lambda: run_demo(evidence_dir, policy=policy, otlp=otlp, console=console)
        )
    except GovernanceViolation as exc:
        raise _fail(f"{type(exc).__name__} (check={exc.check}): {exc.reason}", EXIT_FAILED) from exc
    raise typer.Exit(EXIT_OK if outcome.ok else EXIT_FAILED)


def register(app: typer.Typer) -> None:
    """Add the ``run`` and ``demo`` commands to the root ``tenure`` app."""
    app.command("run")(run_command)
    app.command("demo")(demo_command)
