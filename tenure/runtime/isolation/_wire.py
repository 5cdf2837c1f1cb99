"""The worker channel: length-prefixed frames, and a data-only encoding for replies.

The governing process trusts nothing a worker sends: the worker runs the very code whose
authority the runtime polices. So, parent side:

* **Frames never block the loop.** A frame is an 8-byte big-endian length and that many
  bytes. :class:`FrameReader` reads what the socket has (non-blocking) and awaits
  readability for the rest: a worker that writes half a frame and stops cannot freeze the
  event loop (so a revocation still runs and kills it). A frame longer than
  :data:`MAX_FRAME` or whose rest does not arrive within :data:`FRAME_SECONDS` of its
  header is *garbled*; so is end-of-file inside a frame.
* **Replies are data, decoded without running code.** :func:`encode_reply` /
  :func:`decode_reply` use JSON of a tagged tree (no pickle: unpickling can call anything
  the sender names). It carries ``None``, ``bool``, ``int``, ``float`` (NaN and ±inf
  included), ``str``, ``bytes``, ``bytearray``, ``list``, ``tuple``, ``dict``, ``set``,
  ``frozenset``, ``Decimal``, ``UUID``, dates and times; and enum members, pydantic models,
  dataclasses, named tuples and exceptions *by class name*, rebuilt only when the class is
  already imported in the governing process (nothing is imported on decode) and is of that
  kind, without calling its ``__init__``, ``__new__``, validators, default factories or
  ``model_post_init``. Tenure's own classes
  are never rebuilt (a worker cannot forge a lease or a governance error); an exception
  whose class cannot be rebuilt arrives as :class:`RemoteError`. Anything malformed raises
  :class:`WireError`.

Parent-to-worker messages stay pickled: the worker trusts its parent.
"""

from __future__ import annotations

import base64
import builtins
import contextlib
import dataclasses
import datetime
import decimal
import enum
import socket
import sys
import uuid
from typing import Any, Final

import anyio
import orjson
from pydantic import BaseModel

from ...crypto import dataclass_fields, model_fields, qualified_name

__all__ = [
    "FRAME_SECONDS",
    "MAX_FRAME",
    "FrameReader",
    "RemoteError",
    "WireError",
    "decode_reply",
    "encode_reply",
    "frame",
    "send_frame",
]

#: The largest frame either side accepts (bytes).
MAX_FRAME: Final = 1 << 30
#: Once a frame's header arrived, the rest must follow within this many seconds.
FRAME_SECONDS: Final = 10.0
_HEADER: Final = 8
_MAX_DEPTH: Final = 200
_TEXT_TYPES: Final[dict[str, Any]] = {
    "decimal.Decimal": decimal.Decimal,
    "uuid.UUID": uuid.UUID,
    "datetime.datetime": datetime.datetime.fromisoformat,
    "datetime.date": datetime.date.fromisoformat,
    "datetime.time": datetime.time.fromisoformat,
}


class WireError(Exception):
    """A frame or reply that does not follow the protocol."""


class RemoteError(RuntimeError):
    """An exception raised in a worker whose class the governing process does not rebuild."""


def frame(data: bytes) -> bytes:
    """``data`` with its 8-byte length header."""
    return len(data).to_bytes(_HEADER, "big") + data


async def send_frame(sock: socket.socket, data: bytes) -> None:
    """Send one frame on a non-blocking socket without blocking the loop."""
    view = memoryview(frame(data))
    while view:
        try:
            sent = sock.send(view)
        except BlockingIOError:
            await anyio.wait_writable(sock)
            continue
        view = view[sent:]


class FrameReader:
    """Reads frames from a non-blocking socket (see the module docstring)."""

    __slots__ = ("_buf", "_sock")

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buf = bytearray()

    async def frame(self) -> bytes:
        """The next frame; ``EOFError`` on a clean end, :class:`WireError` if garbled."""
        size = await self._fill(_HEADER, None)
        if size is None:
            raise EOFError("the worker closed its channel")
        n = int.from_bytes(self._buf[:_HEADER], "big")
        if n > MAX_FRAME:
            raise WireError(f"frame header announces {n} bytes, more than the {MAX_FRAME} allowed")
        with anyio.move_on_after(FRAME_SECONDS) as scope:
            got = await self._fill(_HEADER + n, "frame")
        if scope.cancelled_caught:
            raise WireError(
                f"the rest of a {n}-byte frame did not arrive within {FRAME_SECONDS:g}s"
            )
        assert got is not None
        data = bytes(self._buf[_HEADER : _HEADER + n])
        del self._buf[: _HEADER + n]
        return data

    async def _fill(self, want: int, inside: str | None) -> int | None:
        while len(self._buf) < want:
            try:
                chunk = self._sock.recv(max(65536, want - len(self._buf)))
            except BlockingIOError:
                await anyio.wait_readable(self._sock)
                continue
            except OSError as exc:
                raise EOFError(f"the worker's channel failed: {exc}") from None
            if not chunk:
                if self._buf or inside is not None:
                    raise WireError(f"end of file inside a frame ({len(self._buf)} bytes read)")
                return None
            self._buf += chunk
        return len(self._buf)


# -- the data-only encoding --------------------------------------------------------------


def encode_reply(value: Any) -> bytes:
    """JSON of the tagged tree of ``value``; ``TypeError`` naming a value it cannot carry."""
    return orjson.dumps(_enc(value, 0))


def _text(s: str) -> list[Any]:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return ["u", base64.b64encode(s.encode("utf-8", "surrogatepass")).decode("ascii")]
    return ["s", s]


def _fields(fields: dict[str, Any], depth: int) -> list[Any]:
    return [[k, _enc(x, depth)] for k, x in fields.items()]


def _enc(v: Any, depth: int) -> list[Any]:
    if depth > _MAX_DEPTH:
        raise TypeError(f"a value nested deeper than {_MAX_DEPTH} levels cannot be sent")
    t, d = type(v), depth + 1
    if v is None:
        return ["n"]
    if t is bool:
        return ["b", v]
    if isinstance(v, enum.Enum):
        return ["e", qualified_name(t), v.name]
    if isinstance(v, BaseException):
        return _enc_exception(v, d)
    if isinstance(v, int):
        return ["i", str(int.__int__(v))]
    if isinstance(v, float):
        return ["f", float.hex(float.__float__(v))]
    if isinstance(v, str):
        return _text(str.__str__(v))
    if isinstance(v, bytes | bytearray):
        return ["Y" if t is bytearray else "y", base64.b64encode(v).decode("ascii")]
    if t in (decimal.Decimal, uuid.UUID):
        return ["x", qualified_name(t), str(v)]
    if t in (datetime.datetime, datetime.date, datetime.time):
        return ["x", qualified_name(t), v.isoformat()]
    if isinstance(v, dict):
        return ["d", [[_enc(k, d), _enc(x, d)] for k, x in dict.items(v)]]
    if isinstance(v, list):
        return ["l", [_enc(x, d) for x in v]]
    if isinstance(v, tuple):
        if hasattr(t, "_fields") and t is not tuple:
            return ["c", qualified_name(t), _fields(dict(zip(t._fields, v, strict=True)), d)]
        return ["t", [_enc(x, d) for x in v]]
    if isinstance(v, set | frozenset):
        return ["F" if isinstance(v, frozenset) else "S", [_enc(x, d) for x in v]]
    if isinstance(v, BaseModel):
        return ["m", qualified_name(t), _fields(model_fields(v), d)]
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return ["c", qualified_name(t), _fields(dataclass_fields(v), d)]
    raise TypeError(
        f"a value of type {qualified_name(t)} cannot cross the process boundary (replies are "
        "data: JSON types, bytes, tuples, sets, enums, pydantic models, dataclasses, dates)"
    )


def _enc_exception(exc: BaseException, depth: int) -> list[Any]:
    try:
        args = [_enc(a, depth) for a in exc.args]
    except TypeError:
        args = [_text(str(exc))]
    return ["X", qualified_name(type(exc)), args]


def decode_reply(data: bytes) -> Any:
    """Rebuild a value from :func:`encode_reply` bytes; :class:`WireError` if malformed."""
    try:
        tree = orjson.loads(data)
        return _dec(tree, 0)
    except WireError:
        raise
    except (orjson.JSONDecodeError, ValueError, TypeError, KeyError, IndexError) as exc:
        raise WireError(f"malformed reply: {type(exc).__name__}: {exc}") from None


def _find_class(name: str) -> type | None:
    """An already-imported class by ``module.qualname``, without importing or running code."""
    # Longest module prefix that is imported: qualnames may hold dots (nested classes).
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        mod = sys.modules.get(".".join(parts[:cut]))
        if mod is None:
            continue
        if mod.__name__ == "tenure" or mod.__name__.startswith("tenure."):
            return None  # the runtime's own types are never rebuilt from a worker's words
        obj: Any = mod
        for part in parts[cut:]:
            space = obj.__dict__ if isinstance(obj, type) else vars(obj)
            obj = space.get(part)
            if obj is None:
                return None
        return obj if isinstance(obj, type) else None
    return None


def _pairs(items: Any, depth: int) -> dict[str, Any]:
    out = {}
    for k, x in items:
        if not isinstance(k, str):
            raise WireError(f"field name {k!r} is not a string")
        out[k] = _dec(x, depth)
    return out


def _dec(node: Any, depth: int) -> Any:
    if depth > _MAX_DEPTH or not isinstance(node, list) or not node:
        raise WireError(f"not a value node: {str(node)[:60]}")
    tag, d = node[0], depth + 1
    if tag == "n":
        return None
    if tag == "b" and isinstance(node[1], bool):
        return node[1]
    if tag == "i" and isinstance(node[1], str):
        return int(node[1])
    if tag == "f" and isinstance(node[1], str):
        return float.fromhex(node[1])
    if tag == "s" and isinstance(node[1], str):
        return node[1]
    if tag == "u":
        return base64.b64decode(node[1], validate=True).decode("utf-8", "surrogatepass")
    if tag in ("y", "Y"):
        raw = base64.b64decode(node[1], validate=True)
        return raw if tag == "y" else bytearray(raw)
    if tag == "x" and node[1] in _TEXT_TYPES and isinstance(node[2], str):
        return _TEXT_TYPES[node[1]](node[2])
    if tag == "l":
        return [_dec(x, d) for x in node[1]]
    if tag == "t":
        return tuple(_dec(x, d) for x in node[1])
    if tag == "d":
        return {_dec(k, d): _dec(x, d) for k, x in node[1]}
    if tag in ("S", "F"):
        items = [_dec(x, d) for x in node[1]]
        return set(items) if tag == "S" else frozenset(items)
    if tag in ("e", "m", "c", "X") and isinstance(node[1], str):
        return _dec_class(tag, node[1], node[2], d)
    raise WireError(f"unknown value node {str(node)[:60]}")


def _dec_class(tag: str, name: str, body: Any, depth: int) -> Any:
    cls = _find_class(name)
    if tag == "X":
        args = tuple(_dec(a, depth) for a in body)
        return _rebuild_exception(cls, name, args)
    if cls is None:
        raise WireError(f"class {name} is not one the governing process has imported")
    if tag == "e":
        if not issubclass(cls, enum.Enum) or not isinstance(body, str):
            raise WireError(f"{name} is not an enum")
        member = cls._member_map_.get(body)
        if member is None:
            raise WireError(f"{name} has no member {body!r}")
        return member
    fields = _pairs(body, depth)
    if tag == "m":
        if not issubclass(cls, BaseModel):
            raise WireError(f"{name} is not a pydantic model")
        return _build_model(cls, fields)
    if issubclass(cls, tuple) and hasattr(cls, "_fields"):
        return tuple.__new__(cls, [fields[f] for f in cls._fields])
    if not dataclasses.is_dataclass(cls):
        raise WireError(f"{name} is not a dataclass or named tuple")
    obj = object.__new__(cls)
    for k, x in fields.items():
        object.__setattr__(obj, k, x)
    return obj


def _build_model(cls: type[BaseModel], fields: dict[str, Any]) -> BaseModel:
    """A model instance holding ``fields``, built the way ``model_construct`` builds one but
    running none of the class's code: ``model_construct`` calls the class's ``__new__``, its
    default factories and ``model_post_init``, any of which a worker could aim at by name."""
    known = cls.model_fields
    obj = object.__new__(cls)
    object.__setattr__(obj, "__dict__", {k: x for k, x in fields.items() if k in known})
    object.__setattr__(obj, "__pydantic_fields_set__", {k for k in fields if k in known})
    if not cls.__pydantic_root_model__:
        allow = cls.model_config.get("extra") == "allow"
        extra = {k: x for k, x in fields.items() if k not in known} if allow else None
        object.__setattr__(obj, "__pydantic_extra__", extra)
        object.__setattr__(obj, "__pydantic_private__", None)
    return obj


def _rebuild_exception(cls: type | None, name: str, args: tuple[Any, ...]) -> BaseException:
    builtin = None
    if name.startswith("builtins."):
        builtin = vars(builtins).get(name.removeprefix("builtins."))
    if isinstance(builtin, type) and issubclass(builtin, Exception):
        with contextlib.suppress(Exception):  # arguments it refuses: keep the message
            return builtin(*args)  # a builtin's own C constructor
    elif cls is not None and issubclass(cls, Exception):
        exc = BaseException.__new__(cls, *args)  # sets args; runs none of the class's code
        exc.args = args
        return exc
    message = ", ".join(str(a) for a in args)
    return RemoteError(f"{name}: {message}")
