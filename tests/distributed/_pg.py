"""A throwaway PostgreSQL server for the test suite: initdb, start, kill, freeze, stop.

The suite starts its own server (nothing is assumed to be running): ``initdb`` into a
fresh temporary directory, ``postgres`` listening on 127.0.0.1 only, on a free port, with
its Unix socket inside the data directory. PostgreSQL refuses to run as root, so when the
suite runs as root every server process runs as the ``postgres`` user (the directory is
made theirs first).

The server's durability is left as PostgreSQL ships it except ``fsync=off``: the fault
tests kill *processes*, never the machine, and a commit's WAL is written to the kernel
before it is acknowledged either way, so what a test proves about committed data is
unchanged while each commit stops costing a disk flush.

Faults the failure tests inject:

- :meth:`PgServer.kill`: SIGKILL the postmaster and every backend (a crash);
- :meth:`PgServer.freeze` / :meth:`PgServer.thaw`: SIGSTOP / SIGCONT the postmaster and
  *every* child, one by one: backends call ``setsid()``, so signalling the postmaster's
  process group would freeze nothing but the postmaster.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["PgServer", "PgUnavailable", "find_pg_bin"]

_START_TIMEOUT = 30.0
_SETTINGS = (
    "fsync=off",
    "full_page_writes=off",
    "max_connections=200",
    "shared_buffers=32MB",
    "log_min_messages=warning",
)


class PgUnavailable(Exception):
    """PostgreSQL cannot be had here (the message says what is missing)."""


def find_pg_bin() -> Path:
    """The directory holding ``initdb`` and ``postgres``.

    ``PATH`` first, then Debian's ``/usr/lib/postgresql/<version>/bin`` (newest first).
    """
    candidates: list[Path] = []
    on_path = shutil.which("initdb")
    if on_path is not None:
        candidates.append(Path(on_path).resolve().parent)
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
        reverse=True,
    )
    candidates.extend(Path(p) for p in versions)
    for directory in candidates:
        if all((directory / tool).is_file() for tool in ("initdb", "postgres")):
            return directory
    raise PgUnavailable(
        "PostgreSQL server binaries (initdb, postgres) are not on PATH nor under "
        "/usr/lib/postgresql/*/bin: install the Debian package 'postgresql' (make test does)"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _children(pid: int) -> list[int]:
    """Every live process whose parent is ``pid`` (read from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # Fields after the command name, which is in parentheses and may hold spaces.
        rest = stat[stat.rfind(")") + 2 :].split()
        if int(rest[1]) == pid:
            found.append(int(entry))
    return found


@dataclass
class PgServer:
    """One PostgreSQL cluster in a temporary directory (see the module docstring)."""

    bin_dir: Path
    root: Path
    port: int = 0
    _user: pwd.struct_passwd | None = None
    _started: bool = field(default=False, repr=False)
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @classmethod
    def create(cls, template: Path | None = None) -> PgServer:
        """initdb a new cluster (or copy an initdb'd ``template`` data directory)."""
        bin_dir = find_pg_bin()
        user = None
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam("postgres")
            except KeyError as exc:
                raise PgUnavailable(
                    "running as root and there is no 'postgres' user to run the server as "
                    "(PostgreSQL refuses root): install the Debian package 'postgresql'"
                ) from exc
        root = Path(tempfile.mkdtemp(prefix="tenure-pg-"))
        server = cls(bin_dir=bin_dir, root=root, _user=user)
        if user is not None:
            os.chown(root, user.pw_uid, user.pw_gid)
        try:
            if template is not None:
                server._run(["cp", "-a", str(template), str(server.data)])
            else:
                server._run(
                    [
                        str(bin_dir / "initdb"),
                        "--pgdata",
                        str(server.data),
                        "--username",
                        "postgres",
                        "--auth",
                        "trust",
                        "--encoding",
                        "UTF8",
                        "--locale",
                        "C",
                        "--no-sync",
                    ]
                )
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
        return server

    @property
    def data(self) -> Path:
        """The data directory (also where the Unix socket is)."""
        return self.root / "data"

    @property
    def log(self) -> Path:
        """The server log."""
        return self.root / "server.log"

    @property
    def dsn(self) -> str:
        """A URL for the ``postgres`` database over loopback TCP."""
        return self.url("postgres")

    def url(self, database: str) -> str:
        """A URL for ``database`` over loopback TCP."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, argv: list[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        user = self._user
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            user=user.pw_uid if user else None,
            group=user.pw_gid if user else None,
            extra_groups=[] if user else None,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"},
            cwd=self.root,
            check=False,
        )
        if done.returncode != 0:
            raise PgUnavailable(
                f"{Path(argv[0]).name} failed (exit {done.returncode}): "
                f"{(done.stderr or done.stdout).strip()[-800:]}"
            )
        return done

    def trust(self, cidr: str) -> None:
        """Let clients from ``cidr`` in without a password (a test network namespace)."""
        with open(self.data / "pg_hba.conf", "a") as f:
            f.write(f"host all all {cidr} trust\n")

    def start(self, listen: tuple[str, ...] = ("127.0.0.1",)) -> None:
        """Start the server (on a new free port the first time; the same one after).

        The postmaster is this process's own child (not daemonized by pg_ctl), so a
        killed server is reaped at once and never lingers as a zombie whose pid would
        make the next start refuse the data directory.
        """
        for _attempt in range(5):
            if not self.port:
                self.port = _free_port()
            user = self._user
            with open(self.log, "ab") as log:
                self._proc = subprocess.Popen(
                    [
                        str(self.bin_dir / "postgres"),
                        "-D",
                        str(self.data),
                        "-c",
                        f"listen_addresses={','.join(listen)}",
                        "-c",
                        f"port={self.port}",
                        "-c",
                        f"unix_socket_directories={self.data}",
                        *(arg for opt in _SETTINGS for arg in ("-c", opt)),
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    user=user.pw_uid if user else None,
                    group=user.pw_gid if user else None,
                    extra_groups=[] if user else None,
                    env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"},
                    cwd=self.root,
                    start_new_session=True,
                )
            if self._wait_ready():
                self._started = True
                return
            if "could not bind" in self._log_tail() and not self._started:
                self.port = 0  # another process took the port meanwhile
                continue
            raise PgUnavailable(f"the server did not start: {self._log_tail()}")
        raise PgUnavailable(f"no free port found to start the server: {self._log_tail()}")

    def _wait_ready(self) -> bool:
        """Wait until ``postmaster.pid`` says ``ready`` (what ``pg_ctl start --wait`` reads)."""
        proc = self._proc
        assert proc is not None
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            try:
                lines = (self.data / "postmaster.pid").read_text().splitlines()
            except OSError:
                lines = []
            if (
                len(lines) >= 8
                and lines[0].strip() == str(proc.pid)
                and lines[7].strip() == "ready"
            ):
                return True
            time.sleep(0.01)
        proc.kill()
        proc.wait()
        return False

    def _log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-800:]
        except OSError:
            return "(no server log)"

    def postmaster_pid(self) -> int | None:
        """The postmaster's pid (``None`` if it is not running)."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def processes(self) -> list[int]:
        """The postmaster and every child process it has (backends, checkpointer, ...)."""
        pid = self.postmaster_pid()
        return [] if pid is None else [pid, *_children(pid)]

    def kill(self) -> None:
        """SIGKILL the postmaster and every child: the server crashes mid-flight."""
        procs = self.processes()
        for pid in procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self._proc is not None:
            self._proc.wait()
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in procs):
            if time.monotonic() > deadline:
                raise RuntimeError(f"postgres processes {procs} survived SIGKILL")
            time.sleep(0.01)

    def freeze(self) -> list[int]:
        """SIGSTOP the postmaster and every child, one by one; returns their pids."""
        procs = self.processes()
        for pid in procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        return procs

    def thaw(self, procs: list[int]) -> None:
        """SIGCONT every process that :meth:`freeze` stopped."""
        for pid in procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def stop(self) -> None:
        """Stop the server: fast shutdown (SIGINT), a crash (SIGKILL) if that hangs."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        self.thaw(self.processes())  # a frozen server cannot shut down
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()

    def destroy(self) -> None:
        """Stop the server and delete its directory."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
