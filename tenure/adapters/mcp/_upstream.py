"""The real MCP server the proxy forwards allowed calls to: its child over stdio.

The SDK's ``stdio_client`` keeps the server process to itself; the proxy must be able to
kill it the moment a run stops (a hard stop: a server that ignores
``notifications/cancelled`` cannot finish a side effect after the revocation), so it spawns
the process itself, in its own process group, and bridges its pipes to a
:class:`~mcp.ClientSession` with the SDK's own message types.

Invariants:

- The child is in a new session (its own process group): :meth:`Upstream.kill` ends it and
  every process it started, with ``SIGKILL``.
- The child inherits the proxy's environment: the proxy stands in for the server in the
  client's configuration, so the server sees what the client gave it (``OTEL_*`` included,
  so its spans join the trace).
- Leaving :func:`spawn_upstream` is bounded: stdin closed, a grace period, then the kill.

:class:`Upstream` is what the governance core sees of any upstream, whatever its transport
(``_remote.py`` reaches one over Streamable HTTP): the client session, the server's
``initialize`` answer, and :meth:`Upstream.kill`, the stop a run's violation triggers.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Final

import anyio
import mcp_types as types
from anyio.abc import Process
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from anyio.streams.text import TextReceiveStream
from mcp import ClientSession
from mcp.shared.message import SessionMessage

__all__ = ["Upstream", "spawn_upstream"]

#: seconds the server has to exit on its own once its stdin is closed
EXIT_GRACE_S: Final = 2.0
_POLL_S: Final = 0.01


class Upstream:
    """A connected upstream server: the client session talking to it and how to stop it.

    Args:
        session: the initialized client session to the server.
        init: the server's answer to ``initialize`` (its name, version, instructions).
        stop: ends the server's side at once (kills a child; closes a remote session).
        name: the server as the run records it (its command line or URL).
    """

    def __init__(
        self,
        session: ClientSession,
        init: types.InitializeResult,
        stop: Callable[[], None],
        name: str,
    ) -> None:
        self.session = session
        self.init = init
        self.name = name
        self.killed = False
        self._stop = stop

    def kill(self) -> None:
        """Stop the server's side now: nothing more is forwarded to it."""
        self.killed = True
        self._stop()


@contextlib.asynccontextmanager
async def spawn_upstream(command: Sequence[str]) -> AsyncIterator[Upstream]:
    """Start ``command`` as an MCP stdio server and yield an initialized :class:`Upstream`.

    On exit the server is stopped, bounded: stdin closed, :data:`EXIT_GRACE_S` to exit on
    its own, then killed.
    """
    if not command:
        raise ValueError("no server command given (expected: -- SERVER_COMMAND ARGS...)")
    process = await anyio.open_process(
        list(command), stderr=sys.stderr, start_new_session=True, env=dict(os.environ)
    )
    to_session, from_server = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    to_server, from_session = anyio.create_memory_object_stream[SessionMessage](0)
    async with anyio.create_task_group() as tg:
        tg.start_soon(_read, process, to_session)
        tg.start_soon(_write, process, from_session)
        try:
            async with ClientSession(from_server, to_server) as session:
                init = await session.initialize()
                yield Upstream(session, init, lambda: _kill(process), " ".join(command))
        finally:
            with anyio.CancelScope(shield=True):
                await _stop(process)
            tg.cancel_scope.cancel()


def _kill(process: Process, *, group_only: bool = False) -> None:
    if process.returncode is None or group_only:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)


async def _exited(process: Process) -> bool:
    # Polled, not process.wait(): that also waits for the pipes, which a grandchild that
    # inherited them may hold open.
    with anyio.move_on_after(EXIT_GRACE_S):
        while process.returncode is None:  # noqa: ASYNC110 (no exit event without wait())
            await anyio.sleep(_POLL_S)
    return process.returncode is not None


async def _stop(process: Process) -> None:
    if process.stdin is not None:
        with contextlib.suppress(OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
            await process.stdin.aclose()
    if not await _exited(process):
        _kill(process)
        await _exited(process)
    _kill(process, group_only=True)  # whatever the server started and left behind


async def _read(process: Process, out: MemoryObjectSendStream[SessionMessage | Exception]) -> None:
    assert process.stdout is not None
    buffer = ""
    async with out:
        with contextlib.suppress(
            anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError, OSError
        ):
            async for chunk in TextReceiveStream(process.stdout, errors="replace"):
                lines = (buffer + chunk).split("\n")
                buffer = lines.pop()
                for line in lines:
                    if line.strip():
                        await out.send(_parse(line))


def _parse(line: str) -> SessionMessage | Exception:
    try:
        message = types.jsonrpc_message_adapter.validate_json(line, by_name=False)
    except ValueError as exc:  # surfaced to the session, as the SDK's own transport does
        return exc
    return SessionMessage(message)


async def _write(process: Process, source: MemoryObjectReceiveStream[SessionMessage]) -> None:
    assert process.stdin is not None
    async with source:
        with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
            async for item in source:
                data = item.message.model_dump_json(by_alias=True, exclude_unset=True) + "\n"
                await process.stdin.send(data.encode())
