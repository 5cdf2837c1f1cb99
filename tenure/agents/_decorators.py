"""``@agent`` and ``@tool``: declare what a function is and which scopes it needs.

A decorated function becomes an :class:`Agent` or :class:`Tool` object. It cannot be called
directly: the only way to run one is through a :class:`~tenure.Runtime` or a
:class:`~tenure.Context`, so nothing executes without a decision and an evidence record.
The undecorated function stays reachable as ``.func`` for unit tests of its logic.
"""

from __future__ import annotations

import inspect
import math
import weakref
from collections.abc import Callable, Iterable
from typing import Any, Final, Literal, TypeVar, overload

from .._util import NoPublicConstructor, final

__all__ = ["Agent", "Isolation", "Tool", "agent", "registered", "tool"]

Isolation = Literal["none", "thread", "process"]
_ISOLATIONS: Final = ("none", "thread", "process")

F = TypeVar("F", bound=Callable[..., Any])


def _scopes(value: Iterable[str] | None, where: str) -> frozenset[str]:
    if value is None:
        return frozenset()
    if isinstance(value, str):
        raise TypeError(f"{where}: scopes must be a set of strings, not the string {value!r}")
    out = frozenset(value)
    for s in out:
        if not isinstance(s, str) or not s:
            raise TypeError(f"{where}: scope {s!r} is not a non-empty string")
    return out


class _Governable(metaclass=NoPublicConstructor):
    kind: str = ""

    def __init__(
        self,
        func: Callable[..., Any],
        name: str | None,
        scopes: frozenset[str],
        isolation: Isolation,
    ) -> None:
        if isolation not in _ISOLATIONS:
            raise ValueError(
                f"@{self.kind} {func.__qualname__}: isolation={isolation!r}, expected one of "
                f"{', '.join(_ISOLATIONS)}"
            )
        self.func = func
        self.__wrapped__ = func
        self.name = name or func.__name__
        self._qualified = f"{self.kind}:{self.name}"  # named on every governed step
        self.scopes = scopes
        self.isolation = isolation
        self.signature = inspect.signature(func)
        self.params = tuple(self.signature.parameters)
        self.__name__ = func.__name__
        self.__qualname__ = func.__qualname__
        self.__module__ = func.__module__
        self.__doc__ = func.__doc__
        _REGISTRY.add(self)

    def __tenure_canonical__(self) -> str:
        """The canonical form of this handle when passed as an argument: kind and name."""
        return f"{self.kind}:{self.qualified}"

    @property
    def qualified(self) -> str:
        """``"agent:<name>"`` or ``"tool:<name>"``: how evidence and errors name it."""
        return self._qualified

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"{self.qualified} cannot be called directly: run it with Runtime.run / "
            f"ctx.{'call' if self.kind == 'tool' else 'delegate'} so it is governed "
            f"(the plain function is {self.name}.func)"
        )

    def __repr__(self) -> str:
        return f"<{self.qualified} scopes={sorted(self.scopes)} isolation={self.isolation}>"


_REGISTRY: weakref.WeakSet[_Governable] = weakref.WeakSet()


def registered() -> list[Agent | Tool]:
    """Every live agent and tool, in a stable order (what attestation measures)."""
    items = [g for g in list(_REGISTRY) if isinstance(g, Agent | Tool)]
    return sorted(items, key=lambda g: (g.kind, g.name, g.__module__, g.__qualname__))


@final
class Agent(_Governable):
    """An agent: an async function whose first parameter is the :class:`Context`."""

    kind = "agent"

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """Arguments by parameter name (defaults applied), without the context parameter."""
        bound = self.signature.bind(None, *args, **kwargs)
        bound.apply_defaults()
        out = dict(bound.arguments)
        out.pop(self.params[0], None)
        return out


@final
class Tool(_Governable):
    """A tool: a function (async, or sync with thread/process isolation) agents call."""

    kind = "tool"

    def __init__(
        self,
        func: Callable[..., Any],
        name: str | None,
        scopes: frozenset[str],
        isolation: Isolation,
        timeout: float | None = None,
    ) -> None:
        super().__init__(func, name, scopes, isolation)
        self.is_async = inspect.iscoroutinefunction(func)
        #: An ``async def`` generator: ``await ctx.call(...)`` returns a governed stream.
        self.is_stream = inspect.isasyncgenfunction(func)
        self.timeout = timeout

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """Arguments by parameter name, defaults applied."""
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return dict(bound.arguments)


def _make_agent(
    func: Callable[..., Any], name: str | None, scopes: frozenset[str], isolation: Isolation
) -> Agent:
    if isolation == "none" and not inspect.iscoroutinefunction(func):
        raise TypeError(f"@agent {func.__qualname__}: an agent must be an `async def` function")
    if isolation != "none" and inspect.iscoroutinefunction(func):
        raise TypeError(
            f"@agent {func.__qualname__}: isolation={isolation!r} takes a plain (sync) function "
            "whose ctx can only read run_id/principal/lease_id/scopes (governed calls stay in "
            "the governing process); for an async agent, isolate its blocking tools instead"
        )
    params = list(inspect.signature(func).parameters.values())
    if not params or params[0].kind not in (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    ):
        raise TypeError(
            f"@agent {func.__qualname__}: the first parameter must take the Context (ctx)"
        )
    _check_module_level(func, "@agent", isolation)
    return Agent._create(func, name, scopes, isolation)


@overload
def agent(func: Callable[..., Any], /) -> Agent: ...
@overload
def agent(
    *,
    name: str | None = None,
    scopes: Iterable[str] | None = None,
    isolation: Isolation = "none",
) -> Callable[[Callable[..., Any]], Agent]: ...
def agent(
    func: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    scopes: Iterable[str] | None = None,
    isolation: Isolation = "none",
) -> Agent | Callable[[Callable[..., Any]], Agent]:
    """Declare an agent and the scopes it may use (``@agent`` or ``@agent(scopes={...})``)."""
    if func is not None:
        return _make_agent(func, None, frozenset(), "none")
    declared = _scopes(scopes, "@agent")

    def deco(f: Callable[..., Any]) -> Agent:
        return _make_agent(f, name, declared, isolation)

    return deco


def _check_module_level(func: Callable[..., Any], where: str, isolation: Isolation) -> None:
    if isolation == "process" and "<locals>" in func.__qualname__:
        raise TypeError(
            f"{where} {func.__qualname__}: isolation='process' needs a function defined at "
            "module level (the worker process imports it by module and name)"
        )


def _make_tool(
    func: Callable[..., Any],
    name: str | None,
    scopes: frozenset[str],
    isolation: Isolation,
    timeout: float | None = None,
) -> Tool:
    is_async = inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func)
    if inspect.isgeneratorfunction(func):
        raise TypeError(
            f"@tool {func.__qualname__}: a synchronous generator cannot be governed item by "
            "item (its items would be produced outside any await the runtime can check); "
            "write it as an `async def` generator (`async def f(...): ... yield item`)"
        )
    if timeout is not None and not 0 < timeout < math.inf:
        raise ValueError(
            f"@tool {func.__qualname__}: timeout={timeout!r}, expected a positive, finite "
            "number of seconds"
        )
    if timeout is not None and isolation == "none" and not is_async:
        raise ValueError(
            f"@tool {func.__qualname__}: timeout={timeout!r} on a synchronous tool running on "
            "the event loop cannot interrupt it; declare isolation='thread' (the thread is "
            "abandoned) or 'process' (the worker is killed), or make the tool `async def`"
        )
    if inspect.isasyncgenfunction(func) and isolation != "none":
        raise TypeError(
            f"@tool {func.__qualname__}: a streaming (async generator) tool runs on the event "
            f"loop; isolation={isolation!r} is for synchronous functions"
        )
    if isolation == "process" and is_async:
        raise TypeError(
            f"@tool {func.__qualname__}: isolation='process' takes a plain (sync) function"
        )
    _check_module_level(func, "@tool", isolation)
    if isolation == "thread" and is_async:
        raise TypeError(
            f"@tool {func.__qualname__}: isolation='thread' takes a plain (sync) function"
        )
    return Tool._create(func, name, scopes, isolation, timeout)


@overload
def tool(func: Callable[..., Any], /) -> Tool: ...
@overload
def tool(
    *,
    name: str | None = None,
    scopes: Iterable[str] | None = None,
    isolation: Isolation = "none",
    timeout: float | None = None,
) -> Callable[[Callable[..., Any]], Tool]: ...
def tool(
    func: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    scopes: Iterable[str] | None = None,
    isolation: Isolation = "none",
    timeout: float | None = None,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Declare a tool and the scopes a caller's lease must hold to call it.

    ``isolation``: ``"none"`` (inline), ``"thread"`` (abandoned on a stop) or ``"process"``
    (a worker process, killed on a stop). ``timeout`` (seconds): a call running longer
    raises ``TimeoutError`` to the agent — an async tool is cancelled (its cleanup runs), a
    thread is abandoned, a worker killed, and it is recorded; a synchronous tool on the
    event loop cannot take one.

    An ``async def`` generator is a streaming tool: ``stream = await ctx.call(tool, ...)``
    is decided and recorded before the first item, then ``async for item in stream`` is
    gated item by item (a stop ends it within one item) and its end is recorded with the
    item count and a digest of the items. A synchronous generator is refused.
    """
    if func is not None:
        return _make_tool(func, None, frozenset(), "none")
    declared = _scopes(scopes, "@tool")

    def deco(f: Callable[..., Any]) -> Tool:
        return _make_tool(f, name, declared, isolation, timeout)

    return deco
