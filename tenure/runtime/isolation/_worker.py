"""The worker-process side of ``isolation="process"``: a loop that runs one call at a time.

A worker is started by :mod:`tenure.runtime.isolation._runner` as a fresh interpreter
(``python -c "...; main()" FD PARENT_PID``: no inherited locks, threads or event loop, and,
unlike ``multiprocessing``'s spawn, the user's ``__main__`` script is not re-executed) with
one end of a socket pair as its only channel. Protocol, every message one frame
(:mod:`._wire`: an 8-byte length, then the bytes); parent-to-worker messages are pickled
(the worker trusts its parent), worker-to-parent messages use the data-only reply encoding
(the parent trusts nothing the worker says):

- parent -> worker, once at start: ``("init", sys_path, stack_file)``;
- worker -> parent, once at start: ``("ready", pid)``;
- parent -> worker: ``(module, qualname, file, args, kwargs)``;
- worker -> parent: ``(True, result)`` or ``(False, (exception, traceback_text))``.

Invariants:

- The worker never decides anything: it runs what the parent already decided and recorded,
  and the parent kills it (SIGKILL) when that authority ends. Nothing in here can delay or
  refuse the kill.
- On Linux the worker asks the kernel to SIGKILL it when the thread that started it exits
  (``PR_SET_PDEATHSIG``), so a crashed governing process does not leave tools running.
- SIGINT is ignored: Ctrl-C is the governing process's to handle; workers end by the
  parent's kill or by end-of-file on their pipe.
- Results that the reply encoding cannot carry come back as a ``TypeError`` naming the
  type, never as a hang; an exception whose arguments it cannot carry is sent with its
  message instead.
- SIGUSR1 makes the worker write its Python stack into ``stack_file`` (``faulthandler``:
  C-level, so it works while the body is stuck in ``time.sleep`` or a C extension). The
  parent asks for it before killing a call that stalled, so the evidence names the frame.
"""

from __future__ import annotations

import contextlib
import faulthandler
import importlib
import importlib.util
import os
import pickle
import signal
import socket
import sys
import traceback
from dataclasses import dataclass
from types import ModuleType
from typing import Any, NoReturn

from ._wire import encode_reply, frame

__all__ = ["RemoteTraceback", "WorkerContext", "main", "resolve", "serve"]

_PR_SET_PDEATHSIG = 1


class RemoteTraceback(Exception):
    """The traceback of an exception raised inside a worker (set as its ``__cause__``)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True, slots=True)
class WorkerContext:
    """What a process-isolated agent body receives instead of a :class:`~tenure.Context`.

    Read-only facts about its step. Governed actions (tool calls, delegation, fan-out,
    usage) must happen under the governing process's gate, which a worker cannot reach:
    they raise ``RuntimeError`` saying so.
    """

    run_id: str
    principal: str
    lease_id: str
    scopes: frozenset[str]

    def _refuse(self, what: str) -> NoReturn:
        raise RuntimeError(
            f"ctx.{what} is not available in a process-isolated agent: governed actions run "
            "in the governing process; make this agent async and put the blocking part in a "
            "@tool(isolation='process')"
        )

    def call(self, *args: Any, **kwargs: Any) -> NoReturn:
        """Refused in a worker (see the class docstring)."""
        self._refuse("call")

    def delegate(self, *args: Any, **kwargs: Any) -> NoReturn:
        """Refused in a worker (see the class docstring)."""
        self._refuse("delegate")

    def parallel(self) -> NoReturn:
        """Refused in a worker (see the class docstring)."""
        self._refuse("parallel")

    def record_usage(self, tokens: int = 0, cost: float = 0.0) -> NoReturn:
        """Refused in a worker (see the class docstring)."""
        self._refuse("record_usage")


def resolve(module: str, qualname: str, file: str | None) -> Any:
    """The plain function behind ``module.qualname`` (a ``Tool``/``Agent``'s ``.func``).

    The module is imported by name; a module that is not importable by name (a file loaded
    by the CLI) is loaded from ``file`` under the same name. The governing process's
    ``__main__`` script is loaded from its file as ``__tenure_main__``: its
    ``if __name__ == "__main__":`` block does not run (unguarded top-level code does).
    """
    if module == "__main__":
        if not file:
            raise ImportError("the tool lives in __main__, which has no file to load")
        module = "__tenure_main__"
    mod = sys.modules.get(module)
    if mod is None:
        try:
            mod = importlib.import_module(module)
        except ImportError:
            if not file:
                raise
            mod = _load_file(module, file)
    obj: Any = mod
    for part in qualname.split("."):
        if part == "<locals>":
            raise TypeError(
                f"{module}.{qualname} is defined inside a function; process isolation needs "
                "a function defined at module level"
            )
        obj = getattr(obj, part)
    return getattr(obj, "func", obj)


def _load_file(name: str, file: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load module {name!r} from {file}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return mod


def _die_with_parent(parent_pid: int) -> None:
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os._exit(0)


def _success(result: Any) -> bytes:
    try:
        return encode_reply((True, result))
    except (TypeError, RecursionError) as exc:  # a result that is not data
        return _failure(
            TypeError(
                f"the result of type {type(result).__qualname__} cannot cross the process "
                f"boundary ({exc})"
            )
        )


def _failure(exc: BaseException) -> bytes:
    text = "".join(traceback.format_exception(exc))
    if not isinstance(exc, Exception):  # SystemExit, KeyboardInterrupt: never re-raised as such
        exc = RuntimeError(f"the call ended with {type(exc).__name__}: {exc}")
    try:
        return encode_reply((False, (exc, text)))
    except (TypeError, RecursionError):
        return encode_reply((False, (RuntimeError(f"{type(exc).__qualname__}: {exc}"), text)))


def _recv(sock: socket.socket) -> bytes:
    """One frame (blocking: the worker has nothing else to do); ``EOFError`` at the end."""
    header = _recv_exactly(sock, 8)
    return _recv_exactly(sock, int.from_bytes(header, "big"))


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise EOFError("the governing process closed the channel")
        buf += chunk
    return bytes(buf)


def main() -> None:
    """Entry point of a worker process: ``argv`` = channel fd, governing process pid."""
    fd, parent_pid = int(sys.argv[1]), int(sys.argv[2])
    _die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    serve(socket.socket(fileno=fd))


def serve(sock: socket.socket) -> None:
    """Set up from the init message, announce readiness, serve calls until end-of-file."""
    try:
        tag, sys_path, stack_file = pickle.loads(_recv(sock))
    except (EOFError, OSError):
        return
    if tag != "init":
        raise SystemExit(f"tenure worker: unexpected first message {tag!r}")
    if stack_file:
        # Kept open for the life of the worker: faulthandler writes to the descriptor.
        fd = os.open(stack_file, os.O_WRONLY | os.O_TRUNC)
        faulthandler.register(signal.SIGUSR1, file=fd, all_threads=False, chain=False)
    for entry in reversed(sys_path):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    sock.sendall(frame(encode_reply(("ready", os.getpid()))))
    while True:
        try:
            message = _recv(sock)
        except (EOFError, OSError):
            return
        try:
            module, qualname, file, args, kwargs = pickle.loads(message)
            func = resolve(module, qualname, file)
            result = func(*args, **kwargs)
        except BaseException as exc:  # every failure goes back to the caller
            out = _failure(exc)
        else:
            out = _success(result)
        try:
            sock.sendall(frame(out))
        except OSError:
            return
