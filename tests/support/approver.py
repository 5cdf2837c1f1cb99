"""An approver for the tests: a key the test policies declare, and a console that polls
``rt.pending_approvals()`` the way a person's screen would."""

from __future__ import annotations

from pathlib import Path

import anyio
from cryptography.hazmat.primitives import serialization

from tenure import ApprovalRequest, Runtime, SigningKey

#: the approver ``bob`` that :func:`with_approver` declares in a policy
APPROVER = SigningKey.generate()


def with_approver(policy: str) -> str:
    """``policy`` (TOML text) with ``bob`` and his public key declared as an approver."""
    table = f'\n[approvers]\nbob = "{APPROVER.public_text}"\n'
    head, sep, rest = policy.partition('default = "deny"\n')
    assert sep, 'the policy must say default = "deny"'
    return head + sep + table + rest


async def next_request(rt: Runtime) -> ApprovalRequest:
    """The oldest pending request, as soon as one is waiting (bounded)."""
    with anyio.fail_after(10):
        while True:
            pending = rt.pending_approvals()
            if pending:
                return pending[0]
            await anyio.sleep(0.005)


def approver_key_file(directory: Path) -> Path:
    """:data:`APPROVER`'s private key as a PEM file (for ``tenure approvals ... --key``)."""
    path = directory / "bob.key"
    pem = APPROVER.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.write_bytes(pem)
    path.chmod(0o600)
    return path
