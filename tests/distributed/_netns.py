"""A network namespace joined to the host by a veth pair: a worker "host" that can be cut off.

``ip link set <host end> down`` is a silent partition: no RST, no error, packets simply stop
(what a real network failure looks like to both ends). Needs root and iproute2; when either
is missing :func:`available` says why and the tests that need it are skipped with that
reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

__all__ = ["NetNs", "available"]


def _ip(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *argv], capture_output=True, text=True, timeout=30, check=False)


def available() -> str | None:
    """``None`` when namespaces can be made here, else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2 ('ip') is not installed"
    probe = f"tnrprobe{os.getpid() % 100000}"
    made = _ip("netns", "add", probe)
    if made.returncode != 0:
        return f"'ip netns add' failed: {made.stderr.strip()}"
    _ip("netns", "del", probe)
    return None


@dataclass
class NetNs:
    """One namespace, its veth pair and addresses (``host_ip`` on the host side)."""

    name: str
    host_if: str
    host_ip: str
    ns_ip: str

    @classmethod
    def create(cls, index: int) -> NetNs:
        """A namespace ``tnr<index>`` reachable from the host at 10.231.<index>.1/30."""
        name, host_if, ns_if = f"tnr{index}", f"tnrh{index}", f"tnrn{index}"
        host_ip, ns_ip = f"10.231.{index}.1", f"10.231.{index}.2"
        ns = cls(name, host_if, host_ip, ns_ip)
        steps = [
            ("netns", "add", name),
            ("link", "add", host_if, "type", "veth", "peer", "name", ns_if),
            ("link", "set", ns_if, "netns", name),
            ("addr", "add", f"{host_ip}/30", "dev", host_if),
            ("link", "set", host_if, "up"),
            ("-n", name, "addr", "add", f"{ns_ip}/30", "dev", ns_if),
            ("-n", name, "link", "set", ns_if, "up"),
            ("-n", name, "link", "set", "lo", "up"),
        ]
        for step in steps:
            done = _ip(*step)
            if done.returncode != 0:
                ns.destroy()
                raise RuntimeError(f"ip {' '.join(step)} failed: {done.stderr.strip()}")
        return ns

    def argv(self, command: list[str]) -> list[str]:
        """``command`` run inside the namespace."""
        return ["ip", "netns", "exec", self.name, *command]

    def cut(self) -> None:
        """Partition: take the host end of the link down (silently)."""
        done = _ip("link", "set", self.host_if, "down")
        if done.returncode != 0:
            raise RuntimeError(f"cannot cut {self.host_if}: {done.stderr.strip()}")

    def destroy(self) -> None:
        """Remove the namespace (its end of the pair goes with it, and so the host end)."""
        _ip("netns", "del", self.name)
        _ip("link", "del", self.host_if)
