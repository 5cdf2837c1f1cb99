"""The worker channel, taken apart: what a reply may carry, and what a lying worker sends.

The process-level tests (``test_isolation.py``) show a lying worker is killed and its run
stopped; these show, value by value and frame by frame, why: the decoder rebuilds only data,
never runs code, never rebuilds the runtime's own types, and names what it refused.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import socket
import sys
import uuid
from collections.abc import Iterator
from typing import Any, NamedTuple

import anyio
import anyio.lowlevel
import orjson
import pytest
from pydantic import BaseModel, ConfigDict, Field

from tenure import LeaseRevoked
from tenure.runtime.isolation import _wire
from tenure.runtime.isolation._wire import (
    MAX_FRAME,
    FrameReader,
    RemoteError,
    WireError,
    decode_reply,
    encode_reply,
    frame,
    send_frame,
)


class Colour(enum.Enum):
    RED = 1
    BLUE = 2


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: int


class Pair(NamedTuple):
    left: Any
    right: Any


class Invoice(BaseModel):
    number: str
    cents: int


#: what a class's own code did during decoding (must stay empty)
RAN: list[str] = []


def _factory() -> int:
    RAN.append("default_factory")
    return 0


class Touchy(BaseModel):
    """A model with every hook pydantic's ``model_construct`` would run."""

    value: int
    other: int = Field(default_factory=_factory)

    def __new__(cls, *args: Any, **kwargs: Any) -> Touchy:
        RAN.append("__new__")
        return super().__new__(cls)

    def model_post_init(self, _context: Any) -> None:
        RAN.append("model_post_init")


class Loose(BaseModel):
    model_config = ConfigDict(extra="allow")

    value: int


class Custom(Exception):
    """An exception whose constructor must not run on decode."""

    def __init__(self, *args: Any) -> None:
        raise AssertionError("decoding ran the exception's __init__")


@pytest.fixture
def channel() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


PLAIN_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -(10**40),
    1.5,
    float("inf"),
    "text",
    "\ud800 lone surrogate",
    b"\x00\xff",
    bytearray(b"ab"),
    [1, [2, [3]]],
    (1, "two", None),
    {"a": 1, 2: "b", (1, 2): [3]},
    {1, 2},
    frozenset({"x"}),
    decimal.Decimal("1.10"),
    uuid.UUID(int=7),
    datetime.datetime(2026, 12, 1, 12, 0, tzinfo=datetime.UTC),
    datetime.date(2026, 12, 1),
    datetime.time(23, 59, 1),
]


@pytest.mark.parametrize("value", PLAIN_VALUES, ids=lambda v: type(v).__name__)
def test_every_data_type_a_reply_may_carry_comes_back_equal_and_of_its_type(value: Any) -> None:
    back = decode_reply(encode_reply(value))
    assert back == value
    assert type(back) is type(value)


def test_nan_crosses_as_nan() -> None:
    back = decode_reply(encode_reply(float("nan")))
    assert back != back


def test_enums_models_dataclasses_and_named_tuples_are_rebuilt_by_class_name() -> None:
    value = [Colour.BLUE, Invoice(number="A-1", cents=100), Point(1, 2), Pair(Point(0, 0), None)]
    back = decode_reply(encode_reply(value))
    assert back == value
    assert [type(v) for v in back] == [Colour, Invoice, Point, Pair]


def test_a_worker_naming_a_model_with_hooks_runs_none_of_them() -> None:
    """The attack: a reply naming an imported model whose ``__new__``, default factory or
    ``model_post_init`` has side effects (``model_construct`` runs all three). The model is
    rebuilt holding exactly the fields sent, and none of its code runs."""
    RAN.clear()
    wire = orjson.dumps(["m", f"{__name__}.Touchy", [["value", ["i", "3"]], ["x", ["n"]]]])
    back = decode_reply(wire)
    assert RAN == []
    assert type(back) is Touchy and back.value == 3
    assert back.model_fields_set == {"value"}
    assert back.__pydantic_extra__ is None


def test_a_model_that_allows_extra_fields_gets_them_as_extras() -> None:
    back = decode_reply(encode_reply(Loose(value=1, note="kept")))
    assert type(back) is Loose and back.value == 1
    assert back.__pydantic_extra__ == {"note": "kept"}


def test_an_exception_is_rebuilt_without_running_its_constructor() -> None:
    exc = BaseException.__new__(Custom, "boom", 2)
    back = decode_reply(encode_reply(exc))
    assert type(back) is Custom and back.args == ("boom", 2)


def test_a_builtin_exception_is_rebuilt_by_its_own_constructor() -> None:
    back = decode_reply(encode_reply(KeyError("missing")))
    assert type(back) is KeyError and back.args == ("missing",)


def test_a_builtin_exception_with_arguments_it_refuses_arrives_as_a_remote_error() -> None:
    # UnicodeDecodeError takes exactly five arguments: a worker sending one is not believed.
    wire = orjson.dumps(["X", "builtins.UnicodeDecodeError", [["s", "lie"]]])
    back = decode_reply(wire)
    assert type(back) is RemoteError
    assert str(back) == "builtins.UnicodeDecodeError: lie"


def test_an_exception_whose_arguments_cannot_cross_keeps_its_message() -> None:
    back = decode_reply(encode_reply(ValueError(object())))
    assert type(back) is ValueError
    assert back.args[0].startswith("<object object at")


def test_a_value_that_is_not_data_is_refused_by_name_before_it_is_sent() -> None:
    with pytest.raises(TypeError, match=r"builtins\.object cannot cross the process boundary"):
        encode_reply({"k": object()})


def test_a_value_nested_past_the_bound_is_refused_before_it_is_sent() -> None:
    deep: list[Any] = []
    for _ in range(300):
        deep = [deep]
    with pytest.raises(TypeError, match="nested deeper than 200 levels"):
        encode_reply(deep)


# --- a worker that lies: each malformed reply is a WireError naming what is wrong ------


def test_forged_runtime_error_is_not_rebuilt_as_the_runtimes_own_class() -> None:
    """The attack: a worker names ``tenure._errors.LeaseRevoked`` to pass off a governance
    decision. The runtime's own classes are never rebuilt: it is a RemoteError."""
    wire = orjson.dumps(["X", f"{LeaseRevoked.__module__}.LeaseRevoked", [["s", "forged"]]])
    back = decode_reply(wire)
    assert type(back) is RemoteError
    assert not isinstance(back, LeaseRevoked)
    assert "forged" in str(back)


def test_forged_runtime_model_is_refused() -> None:
    """The attack: a worker sends a pydantic model of the runtime (a policy rule, a grant)
    by name: the decoder refuses to build any class of ``tenure``."""
    wire = orjson.dumps(["m", "tenure.policies._model.Rule", [["id", ["s", "x"]]]])
    with pytest.raises(WireError, match="not one the governing process has imported"):
        decode_reply(wire)


def test_a_class_never_imported_is_not_imported_to_decode_it() -> None:
    """The attack: naming a module that importing would run (``antigravity``)."""
    wire = orjson.dumps(["c", "antigravity.Thing", []])
    with pytest.raises(WireError, match=r"antigravity\.Thing is not one"):
        decode_reply(wire)
    assert "antigravity" not in sys.modules


@pytest.mark.parametrize(
    ("node", "why"),
    [
        (["e", f"{__name__}.Colour", "GREEN"], "has no member 'GREEN'"),
        (["e", f"{__name__}.Point", "RED"], "is not an enum"),
        (["m", f"{__name__}.Point", []], "is not a pydantic model"),
        (["c", f"{__name__}.Colour", []], "is not a dataclass or named tuple"),
        (["c", "builtins.print", []], "is not one the governing process has imported"),
        (["c", f"{__name__}.Point", [[1, ["i", "2"]]]], "field name 1 is not a string"),
        (["q", 1], "unknown value node"),
        ({"not": "a list"}, "not a value node"),
        ([], "not a value node"),
        (["b", "yes"], "unknown value node"),
    ],
    ids=lambda v: str(v)[:40],
)
def test_a_reply_that_lies_about_its_shape_is_refused_with_the_reason(node: Any, why: str) -> None:
    with pytest.raises(WireError, match=why):
        decode_reply(orjson.dumps(node))


@pytest.mark.parametrize(
    "wire",
    [b"not json", orjson.dumps(["i", "twelve"]), orjson.dumps(["y", "!!"]), b'["l", 1]'],
    ids=["json", "int", "base64", "list"],
)
def test_a_malformed_reply_is_a_wire_error_not_a_traceback(wire: bytes) -> None:
    with pytest.raises(WireError, match="malformed reply"):
        decode_reply(wire)


def test_a_reply_nested_past_the_bound_is_refused_not_recursed() -> None:
    wire = b'["l",[' * 250 + b'["n"]' + b"]]" * 250
    with pytest.raises(WireError, match="not a value node"):
        decode_reply(wire)


# --- frames -----------------------------------------------------------------------------


async def test_frames_cross_whole_in_order_including_one_larger_than_a_socket_buffer(
    channel: tuple[socket.socket, socket.socket],
) -> None:
    a, b = channel
    big = bytes(range(256)) * 8192  # 2 MiB: many sends, many receives
    reader = FrameReader(b)
    got: list[bytes] = []

    async def read() -> None:
        for _ in range(3):
            got.append(await reader.frame())

    async with anyio.create_task_group() as tg:
        tg.start_soon(read)
        for data in (b"one", big, b""):
            await send_frame(a, data)
    assert got == [b"one", big, b""]


async def test_a_clean_close_between_frames_is_end_of_file(
    channel: tuple[socket.socket, socket.socket],
) -> None:
    a, b = channel
    a.close()
    with pytest.raises(EOFError, match="closed its channel"):
        await FrameReader(b).frame()


async def test_a_header_announcing_more_than_the_limit_is_garbled_at_once(
    channel: tuple[socket.socket, socket.socket],
) -> None:
    a, b = channel
    a.send((MAX_FRAME + 1).to_bytes(8, "big"))
    with pytest.raises(WireError, match=f"announces {MAX_FRAME + 1} bytes"):
        await FrameReader(b).frame()


async def test_end_of_file_inside_a_header_is_garbled(
    channel: tuple[socket.socket, socket.socket],
) -> None:
    a, b = channel
    a.send(b"\x00\x00\x00")
    a.close()
    with pytest.raises(WireError, match=r"end of file inside a frame \(3 bytes read\)"):
        await FrameReader(b).frame()


async def test_end_of_file_inside_a_body_is_garbled(
    channel: tuple[socket.socket, socket.socket],
) -> None:
    a, b = channel
    a.send(frame(b"0123456789")[:12])
    a.close()
    with pytest.raises(WireError, match="end of file inside a frame"):
        await FrameReader(b).frame()


async def test_a_body_that_never_arrives_is_garbled_after_the_bound_without_blocking(
    channel: tuple[socket.socket, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = channel
    monkeypatch.setattr(_wire, "FRAME_SECONDS", 0.05)
    a.send(frame(b"0123456789")[:12])
    ticks = 0

    async def other_work() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        tg.start_soon(other_work)
        with pytest.raises(WireError, match=r"10-byte frame did not arrive within 0\.05s"):
            await FrameReader(b).frame()
        tg.cancel_scope.cancel()
    assert ticks > 0  # the loop kept running while the reader waited


async def test_a_channel_that_fails_is_end_of_file_naming_the_error() -> None:
    closed = socket.socket()
    closed.close()
    with pytest.raises(EOFError, match="the worker's channel failed"):
        await FrameReader(closed).frame()
