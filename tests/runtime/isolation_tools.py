"""Module-level tools for the isolation tests (a worker process imports them by name).

``tests/`` is on ``sys.path`` under pytest (rootdir conftest, prepend import mode) and the
worker pool hands the parent's ``sys.path`` to every worker.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from tenure import agent, tool
from tenure.runtime.isolation._worker import WorkerContext

#: Events shared with thread tools by key (arguments reach a tool as snapshot copies, so
#: synchronisation objects are looked up here rather than passed).
THREAD_SYNC: dict[str, tuple[threading.Event, threading.Event, list[str]]] = {}


def _started(marker: str) -> None:
    tmp = marker + ".tmp"
    Path(tmp).write_text(str(os.getpid()))
    os.replace(tmp, marker)  # the test sees the pid whole or not at all


@tool(scopes={"fs:write"}, isolation="process")
def sleep_then_write(marker: str, out: str, delay: float) -> str:
    """Announce the pid, block in ``time.sleep(delay)``, then write ``out``."""
    _started(marker)
    time.sleep(delay)
    Path(out).write_text("written after the delay")
    return "done"


@tool(scopes={"fs:write"}, isolation="process")
def spin_then_write(marker: str, out: str, delay: float) -> str:
    """Announce the pid, spin in pure Python for ``delay`` seconds, then write ``out``."""
    _started(marker)
    end = time.monotonic() + delay
    n = 0
    while time.monotonic() < end:
        n += 1
    Path(out).write_text(f"written after {n} spins")
    return "done"


_LATE_WRITER = (
    "import pathlib, sys, time; time.sleep(float(sys.argv[2])); "
    "pathlib.Path(sys.argv[1]).write_text('written by the grandchild')"
)


@tool(scopes={"fs:write"}, isolation="process")
def spawn_then_wait(marker: str, child_marker: str, out: str, delay: float) -> str:
    """Start a child process that writes ``out`` after ``delay`` s, announce it, wait for it."""
    child = subprocess.Popen([sys.executable, "-c", _LATE_WRITER, out, str(delay)])
    tmp = child_marker + ".tmp"
    Path(tmp).write_text(str(child.pid))
    os.replace(tmp, child_marker)
    _started(marker)
    child.wait()
    return "done"


@tool(isolation="process")
def spin_forever(marker: str) -> None:
    """Announce the pid, then ``while True`` in pure Python."""
    _started(marker)
    n = 0
    while True:
        n += 1


@tool(isolation="process")
def worker_pid() -> int:
    """The pid of the process running this tool."""
    return os.getpid()


@tool(isolation="process")
def exit_hard(code: int) -> None:
    """Leave the worker without any cleanup (a crash)."""
    os._exit(code)


@tool(isolation="process")
def fail(message: str) -> None:
    """Raise inside the worker."""
    raise ValueError(message)


@tool(isolation="process")
def echo(value: object) -> object:
    """Return the argument (it crossed the boundary twice)."""
    return value


@tool(isolation="process", timeout=0.3)
def sleep_past_timeout(marker: str) -> None:
    """Block longer than the tool's own timeout."""
    _started(marker)
    time.sleep(30)


@tool(isolation="thread")
def wait_then_return(key: str) -> str:
    """A thread tool: signal, block until ``go``, then return a value (late, after a stop)."""
    ready, go, returned = THREAD_SYNC[key]
    ready.set()
    go.wait(10)
    returned.append("late")
    return "late result"


@tool(isolation="thread", timeout=0.2)
def thread_past_timeout(key: str) -> str:
    """A thread tool blocked past its timeout."""
    THREAD_SYNC[key][1].wait(10)
    return "late"


@agent(isolation="process")
def crunch(ctx: WorkerContext, n: int) -> dict[str, object]:
    """A sync agent body run in a worker: only read-only facts of its step are available."""
    try:
        ctx.call(worker_pid)
    except RuntimeError as exc:
        refused = str(exc)
    else:
        refused = ""
    return {"pid": os.getpid(), "run": ctx.run_id, "sum": sum(range(n)), "refused": refused}


@agent(isolation="process")
def stuck_agent(ctx: WorkerContext, marker: str) -> None:
    """A sync agent body that never returns."""
    _started(marker)
    time.sleep(30)


@tool(isolation="process")
def pid_after(delay: float) -> int:
    """Sleep ``delay`` seconds, then return the worker's pid."""
    time.sleep(delay)
    return os.getpid()


def _channel() -> int:
    return int(sys.argv[1])  # the worker's end of its socket pair (see _worker.main)


@tool(scopes={"fs:write"}, isolation="process")
def reply_truncated_then_hang(marker: str) -> None:
    """Lie to the parent: announce a 4 KiB reply, send 7 bytes of it, never send the rest."""
    os.write(_channel(), (4096).to_bytes(8, "big") + b"partial")
    _started(marker)
    time.sleep(3600)


@tool(scopes={"fs:write"}, isolation="process")
def reply_truncated_then_exit() -> None:
    """Send part of a reply frame, then die: end of file inside a frame."""
    os.write(_channel(), (4096).to_bytes(8, "big") + b"partial")
    os._exit(0)


@tool(scopes={"fs:write"}, isolation="process")
def reply_with_a_huge_header() -> None:
    """A frame header announcing more than any reply may hold."""
    os.write(_channel(), (1 << 62).to_bytes(8, "big"))
    time.sleep(3600)


class _Bomb:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, ...]:
        return (Path.write_text, (Path(self.path), "code ran in the governing process"))


@tool(scopes={"fs:write"}, isolation="process")
def reply_with_a_pickle_bomb(out: str) -> None:
    """A well-framed reply whose bytes are a pickle that writes ``out`` when unpickled."""
    import pickle

    data = pickle.dumps((True, _Bomb(out)))
    os.write(_channel(), len(data).to_bytes(8, "big") + data)
    time.sleep(3600)


@tool(scopes={"fs:write"}, isolation="process")
def reply_naming_a_runtime_class() -> None:
    """A well-formed data reply that asks the parent to rebuild one of Tenure's own errors."""
    import orjson

    data = orjson.dumps(
        ["t", [["b", False], ["t", [["X", "tenure._errors.LeaseRevoked", []], ["s", ""]]]]]
    )
    os.write(_channel(), len(data).to_bytes(8, "big") + data)
    time.sleep(3600)
