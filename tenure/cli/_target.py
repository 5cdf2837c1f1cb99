"""What ``tenure run`` is asked to run: the agent in a file, its arguments, the options.

Everything here is checked before anything runs, and every problem is a
:class:`~tenure.UsageError` saying, in one line, what is wrong: a missing file, a file that
fails to import, a name that is not an ``@agent``, arguments that do not fit the agent's
signature or types, an evidence directory or OTLP endpoint that cannot work, a policy that
does not load.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import re
import sys
import typing
from pathlib import Path
from types import ModuleType
from typing import Any

import pydantic

from .._errors import UsageError
from ..agents._decorators import Agent, Tool
from ..policies import PolicyError, PolicySet

__all__ = ["check_evidence_dir", "check_otlp", "load_agent", "load_policy", "parse_args", "show"]

_KWARG = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", re.DOTALL)


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
        bound = agent_obj.signature.bind(None, *args, **kwargs)
    except TypeError as exc:
        raise UsageError(
            f"wrong arguments for agent {agent_obj.name}{_signature(agent_obj)}: {exc}"
        ) from exc
    _validate_types(agent_obj, bound)
    return tuple(bound.args[1:]), dict(bound.kwargs)


def _validate_types(agent_obj: Agent, bound: inspect.BoundArguments) -> None:
    """Check (and convert: a dict into a pydantic model) each argument against its
    parameter's annotation, in place."""
    try:
        hints = typing.get_type_hints(agent_obj.func)
    except Exception:  # an annotation that cannot be resolved is not checked
        hints = {}
    params = agent_obj.signature.parameters
    for name, value in list(bound.arguments.items())[1:]:
        hint = hints.get(name)
        if hint is None or params[name].kind in (
            params[name].VAR_POSITIONAL,
            params[name].VAR_KEYWORD,
        ):
            continue
        try:
            bound.arguments[name] = pydantic.TypeAdapter(hint).validate_python(value)
        except pydantic.ValidationError as exc:
            problem = exc.errors()[0]["msg"]
            raise UsageError(
                f"argument {name}={show(value)} for agent {agent_obj.name}"
                f"{_signature(agent_obj)}: {problem}"
            ) from None
        except pydantic.PydanticSchemaGenerationError:
            continue  # a type pydantic cannot check is passed as given


def check_evidence_dir(path: Path) -> None:
    """``UsageError`` unless ``path`` is a directory or can become one (nothing is created)."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"--evidence-dir {path}: exists and is not a directory")
    parent = next((p for p in path.absolute().parents if p.exists()), None)
    if not path.exists() and (parent is None or not parent.is_dir()):
        raise UsageError(f"--evidence-dir {path}: {parent} is not a directory")


def check_otlp(endpoint: str | None) -> None:
    """``UsageError`` unless ``endpoint`` is an ``http(s)://host[:port][/path]`` URL."""
    if endpoint is None:
        return
    if not re.match(r"^https?://[^\s/:]+(:\d{1,5})?(/\S*)?$", endpoint):
        raise UsageError(
            f"--otlp {endpoint!r}: expected an http:// or https:// URL such as "
            "http://localhost:4318"
        )


def load_policy(policy: Path | None) -> PolicySet:
    if policy is None:
        return PolicySet.default()
    try:
        return PolicySet.load(policy)
    except PolicyError as exc:
        raise UsageError(f"policy {exc}") from exc


def show(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)
