"""``tenure run FILE:AGENT [ARGS…]`` and ``tenure demo``.

``run`` imports the user's file (by path; module name from the file name), finds the
``@agent``, parses each ARG as a JSON literal (else keeps it as a string; ``NAME=VALUE``
passes a keyword when NAME is one of the agent's parameters), runs it under a
:class:`~tenure.Runtime` and prints the result and the run's evidence directory.

Exit codes (as every ``tenure`` command): 0 success; 1 the run was stopped by a governance
violation (one line: class, check, reason) or the agent raised; 2 a usage error, said in one
line before anything runs: missing file, a file that fails to import, a name that is not an
``@agent``, arguments that do not fit the agent's signature, a missing or invalid policy.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any

import anyio
import typer
from rich.console import Console

from .._errors import GovernanceViolation, UsageError
from ..agents._decorators import Agent, Tool
from ..crypto._keys import PUBLIC_KEY_NAME, default_key_dir
from ..policies import PolicyError, PolicySet

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "load_agent", "parse_args", "register"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

_KWARG = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", re.DOTALL)


def _fail(message: str, code: int) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _module_name(path: Path) -> str:
    stem = path.stem
    if stem.isidentifier() and stem not in sys.modules:
        return stem
    return "_tenure_user_" + re.sub(r"\W", "_", stem)


def _import_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    name = _module_name(path)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"{path}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)  # sibling imports work as in `python FILE`
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:
        sys.modules.pop(name, None)
        detail = f"{type(exc).__name__}: {exc}".rstrip(": ")
        raise UsageError(f"{path}: failed to import: {detail}") from exc
    return module


def load_agent(target: str) -> Agent:
    """``FILE:AGENT`` -> the :class:`Agent` object (``UsageError`` says what is wrong)."""
    file_part, sep, name = target.rpartition(":")
    if not sep or not file_part or not name:
        raise UsageError(f"{target!r}: expected FILE:AGENT, e.g. team.py:planner")
    path = Path(file_part)
    module = _import_file(path)
    obj = getattr(module, name, None)
    agents = sorted(n for n, v in vars(module).items() if isinstance(v, Agent))
    listing = f" (agents in it: {', '.join(agents)})" if agents else " (it defines no @agent)"
    if obj is None:
        raise UsageError(f"{path}: no name {name!r}{listing}")
    if isinstance(obj, Tool):
        raise UsageError(f"{path}:{name} is a @tool, not an @agent{listing}")
    if not isinstance(obj, Agent):
        raise UsageError(f"{path}:{name} is not an @agent (it is a {type(obj).__name__}){listing}")
    return obj


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _signature(agent_obj: Agent) -> str:
    """``(ctx, a: int, b: int = 1)``: the parameters a user passes, readable."""
    params = list(agent_obj.signature.parameters.values())
    params[0] = params[0].replace(annotation=inspect.Parameter.empty)
    return str(inspect.Signature(params))


def parse_args(agent_obj: Agent, raw: list[str]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Parse ARGS for ``agent_obj`` and check them against its signature."""
    params = set(agent_obj.params[1:])
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for item in raw:
        m = _KWARG.match(item)
        if m is not None and m.group(1) in params:
            kwargs[m.group(1)] = _value(m.group(2))
        else:
            args.append(_value(item))
    try:
        agent_obj.bind(tuple(args), kwargs)
    except TypeError as exc:
        raise UsageError(
            f"wrong arguments for agent {agent_obj.name}{_signature(agent_obj)}: {exc}"
        ) from exc
    return tuple(args), kwargs


def _load_policy(policy: Path | None) -> PolicySet:
    if policy is None:
        return PolicySet.default()
    try:
        return PolicySet.load(policy)
    except PolicyError as exc:
        raise UsageError(f"policy {exc}") from exc


def _show(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


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
) -> int:
    from ..runtime._runtime import Runtime

    async with Runtime(
        policies=policy, evidence_dir=evidence_dir, key=key, otlp_endpoint=otlp
    ) as rt:
        handle = await rt.start(
            agent_obj, *args, principal=principal, scopes=set(scopes), ttl=ttl, **kwargs
        )
        try:
            result = await handle.result()
        except GovernanceViolation as exc:
            typer.echo(f"evidence: {handle.evidence_path}")
            typer.echo(f"error: {type(exc).__name__} (check={exc.check}): {exc.reason}", err=True)
            return EXIT_FAILED
        except Exception as exc:
            typer.echo(f"evidence: {handle.evidence_path}")
            typer.echo(
                f"error: agent {agent_obj.name} raised {type(exc).__name__}: {exc}", err=True
            )
            return EXIT_FAILED
    typer.echo(f"result: {_show(result)}")
    typer.echo(f"evidence: {handle.evidence_path}")
    if key is None:
        public = str(default_key_dir() / PUBLIC_KEY_NAME)
    elif key.with_name(PUBLIC_KEY_NAME).is_file():  # the layout `tenure keys generate` writes
        public = str(key.with_name(PUBLIC_KEY_NAME))
    else:
        public = f"<the public key of {key}>"
    typer.echo(f"verify with: tenure verify {handle.evidence_path} --key {public}")
    return EXIT_OK


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
) -> None:
    """Run an @agent from a file under governance; prints its result and evidence dir."""
    if not principal:
        raise _fail("--principal is required (who authorizes this run?)", EXIT_USAGE)
    try:
        agent_obj = load_agent(target)
        call_args, call_kwargs = parse_args(agent_obj, list(args or []))
        policy_set = _load_policy(policy)
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
