"""What an approval request shows, and how someone outside the runtime checks it.

:class:`ApprovalRequest` is the runtime's description of a held step. Shown outside the
process (a ``.approvals`` file, a shared backend's board row) it carries the arguments'
canonical encoding and the policy digest, so :func:`check_request` can recompute the args
digest and the action digest from what an approver is shown: they never sign something
other than what they saw, whoever could write the file or the row.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import BaseModel, ConfigDict

from ..._util import final
from ...crypto import action_digest, args_digest_of, args_encoding

if TYPE_CHECKING:
    from ..kernel._state import Step

__all__ = [
    "MAX_SHOWN_ENCODING",
    "ApprovalRequest",
    "check_request",
    "render_args",
    "shown_encoding",
]

_RENDER_CHARS = 4000
#: Arguments whose encoding is longer are not shown in a request file (it holds 64 KiB).
MAX_SHOWN_ENCODING = 32 * 1024
_DIGESTED = (
    "id",
    "run_id",
    "step",
    "principal",
    "action",
    "target",
    "rule_id",
    "policy_digest",
    "args_digest",
    "action_digest",
    "args_encoding",
)


@final
class ApprovalRequest(BaseModel):
    """A step waiting for a person's decision (read-only; created by the runtime).

    ``args`` is the canonical arguments rendered for a person, ``args_digest`` their digest
    (what the evidence records), ``action_digest`` what an approver signs; ``approvers``
    and ``approver_keys`` (``"ed25519:<base64>"``, in the same order) who may answer.
    ``args_encoding`` (the arguments' canonical encoding, base64; empty past
    :data:`MAX_SHOWN_ENCODING` bytes) and ``policy_digest`` let an approver outside the
    process recompute both digests from what they are shown (``check_request``).
    """

    model_config = ConfigDict(frozen=True)

    id: str
    run_id: str
    principal: str
    action: str
    target: str
    rule_id: str
    step: str
    requested_at_us: int
    args: str = ""
    args_digest: str = ""
    action_digest: str = ""
    approvers: tuple[str, ...] = ()
    approver_keys: tuple[str, ...] = ()
    args_encoding: str = ""
    policy_digest: str = ""


def render_args(bound: Mapping[str, Any]) -> str:
    """The arguments as a person reads them: JSON by parameter name (long ones cut)."""
    text = orjson.dumps(
        dict(bound), default=_describe, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS
    ).decode("utf-8")
    if len(text) > _RENDER_CHARS:
        return text[:_RENDER_CHARS] + f"\n... ({len(text) - _RENDER_CHARS} more characters)"
    return text


def check_request(request: Mapping[str, Any]) -> str:
    """The arguments of a request shown outside the runtime (a ``.approvals`` file, a shared
    backend's board) as its digests cover them (JSON text, long ones cut); ``ValueError``
    naming what does not match, so nothing is signed for it.

    The args digest is recomputed from the canonical encoding the request carries and the
    action digest from every field shown: an approver never signs something other than
    what they were shown, whoever could write the file or the row."""
    bad = [name for name in _DIGESTED if not isinstance(request.get(name), str)]
    if bad:
        raise ValueError(f"the request lacks or mistypes {', '.join(bad)}")
    if not request["args_encoding"]:
        raise ValueError(
            "the request does not carry its arguments (too large to show, or filed by an "
            "older runtime): answer it in the runtime's own process"
        )
    if args_digest_of(request["args_encoding"]) != request["args_digest"]:
        raise ValueError(
            "its arguments do not match its args digest: the request was changed after the "
            "runtime filed it"
        )
    recomputed = action_digest(
        request=request["id"],
        run=request["run_id"],
        step=request["step"],
        principal=request["principal"],
        action=request["action"],
        target=request["target"],
        args=request["args_digest"],
        rule=request["rule_id"],
        policy=request["policy_digest"],
    )
    if recomputed != request["action_digest"]:
        raise ValueError(
            "its fields do not match its action digest: the request was changed after the "
            "runtime filed it"
        )
    return _shown(base64.b64decode(request["args_encoding"]))


def _shown(encoding: bytes) -> str:
    # Plain JSON values are encoded as b"j" + JSON; everything else as b"t" + a tagged tree.
    body = encoding[1:]
    if encoding[:1] == b"j":
        body = orjson.dumps(orjson.loads(body))
    text = body.decode("utf-8")
    return text if len(text) <= _RENDER_CHARS else text[:_RENDER_CHARS] + " ..."


def shown_encoding(step: Step) -> str:
    """The encoding of ``step``'s arguments to show outside the process (empty if too long)."""
    if step.snapshot is None:
        return ""
    encoded = args_encoding(step.snapshot.value())
    return encoded if len(encoded) <= MAX_SHOWN_ENCODING else ""


def _describe(value: object) -> Any:
    if isinstance(value, bytes | bytearray):
        return {"bytes": bytes(value).hex()}
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    form = getattr(value, "value", None)
    if isinstance(value, BaseModel) or form is None:
        try:
            return repr(value)
        except Exception:  # a value whose repr raises is still shown, by its type
            return f"<{type(value).__qualname__}>"
    return form
