"""Model calls through any OpenAI-compatible client as governed steps, in one line.

::

    client = AsyncOpenAI(http_client=httpx.AsyncClient(transport=governed_transport()))
    http = httpx.AsyncClient(base_url=url, transport=governed_transport())  # plain httpx

The transport sits under the client: every ``POST …/chat/completions``, ``…/completions``,
``…/responses`` and ``…/embeddings`` becomes a governed ``call_model`` step of the Tenure
step running it (policy by the ``model`` in the request body, token and cost budgets
checked before it is sent, usage recorded from the response), streaming included: a
``stream=True`` chat request asks for the usage chunk (``stream_options.include_usage``),
and a stream is cut at the run's stop. Other requests (``GET /models``, files) pass
through ungoverned. Responses are asked for uncompressed (``Accept-Encoding: identity``)
so their usage can be read.

Needs the ``openai`` extra (httpx; the ``openai`` package for its client).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any, Final

import anyio

from ._extra import missing_extra

try:
    import httpx
except ImportError as _exc:
    raise missing_extra("openai", "openai", _exc) from None

from tenure import Context, ModelCall, current_context

__all__ = ["GovernedTransport", "governed_transport"]

#: the OpenAI API paths that are model calls
INFERENCE_PATHS: Final = ("/chat/completions", "/completions", "/responses", "/embeddings")
#: the most of a (non-streamed) response body kept to read its usage from
MAX_BODY_BYTES: Final = 16 * 1024 * 1024


class GovernedTransport(httpx.AsyncBaseTransport):
    """An httpx transport that makes each OpenAI-style inference request a governed step.

    Args:
        inner: the transport that sends the requests (default ``httpx.AsyncHTTPTransport()``).
        ctx: the Tenure step to govern under (default: the current one at each request).
        provider: ``gen_ai.provider.name`` (default ``"openai"``).
        prices: cost per million tokens by model, ``{"gpt-4.1-mini": (0.4, 1.6)}`` (input,
            output); a model not listed costs 0.
    """

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport | None = None,
        *,
        ctx: Context | None = None,
        provider: str = "openai",
        prices: Mapping[str, tuple[float, float]] | None = None,
    ) -> None:
        self._inner = inner if inner is not None else httpx.AsyncHTTPTransport()
        self._ctx = ctx
        self._provider = provider
        self._prices = dict(prices or {})

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request``; an inference request only once decided and recorded."""
        if request.method != "POST" or not request.url.path.endswith(INFERENCE_PATHS):
            return await self._inner.handle_async_request(request)
        body = json.loads(await request.aread() or b"{}")
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            raise ValueError(f"{request.url.path}: the request body names no model")
        limit = next(
            (
                body[k]
                for k in ("max_completion_tokens", "max_tokens", "max_output_tokens")
                if type(body.get(k)) is int and body[k] > 0
            ),
            None,
        )
        tctx = self._ctx if self._ctx is not None else current_context()
        call = tctx.model_call(body["model"], provider=self._provider, max_tokens=limit)
        await call.open()
        try:
            streamed = bool(body.get("stream"))
            if streamed and request.url.path.endswith("/chat/completions"):
                options = body.get("stream_options") or {}
                body["stream_options"] = {**options, "include_usage": True}
            request = _rebuilt(request, body)
            response = await self._inner.handle_async_request(request)
        except BaseException as exc:
            call.close(exc)
            raise
        stream = _Governed(response.stream, call, body["model"], self._prices, streamed)
        if response.status_code >= 400:
            stream.failure = f"{body['model']} answered HTTP {response.status_code}"
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=stream,
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        """Close the inner transport."""
        await self._inner.aclose()


def _rebuilt(request: httpx.Request, body: dict[str, Any]) -> httpx.Request:
    headers = httpx.Headers(request.headers)
    headers["accept-encoding"] = "identity"
    content = json.dumps(body).encode()
    headers["content-length"] = str(len(content))
    return httpx.Request(
        request.method, request.url, headers=headers, content=content, extensions=request.extensions
    )


class _Governed(httpx.AsyncByteStream):
    """The response body: passed through, read for usage, cut at the run's stop."""

    def __init__(
        self,
        inner: Any,
        call: ModelCall,
        model: str,
        prices: Mapping[str, tuple[float, float]],
        streamed: bool,
    ) -> None:
        self._inner = inner
        self._call = call
        self._model = model
        self._prices = prices
        self._streamed = streamed
        self._buffer = bytearray()
        self._closed = False
        self.failure: str | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner:
                for piece in self._pieces(chunk):
                    if self._call.stopped:
                        self._finish(None)  # raises the run's stop: nothing more gets through
                    yield piece
            if self._streamed and self._buffer:
                yield bytes(self._buffer)  # a last event without its blank line
        except BaseException as exc:
            # Cut short (the run's stop, the consumer's error): the connection is closed
            # here, since a caller that got an exception may never close the response.
            with anyio.CancelScope(shield=True):
                await self._inner.aclose()
            self._finish(exc)
            raise
        self._finish(None)

    def _pieces(self, chunk: bytes) -> list[bytes]:
        """A stream in whole server-sent events (one check of the stop per event, however
        the network cut them); a plain body as it came, kept to read its usage."""
        if not self._streamed:
            if len(self._buffer) + len(chunk) <= MAX_BODY_BYTES:
                self._buffer += chunk
            return [chunk]
        self._buffer += chunk
        events: list[bytes] = []
        while (end := _event_end(self._buffer)) is not None:
            event, self._buffer = bytes(self._buffer[:end]), self._buffer[end:]
            for line in event.splitlines():
                if line.startswith(b"data:"):
                    self._usage(line[5:].strip())
            events.append(event)
        return events

    def _usage(self, data: bytes) -> None:
        try:
            obj = json.loads(data)
        except ValueError:  # "[DONE]", or not JSON
            return
        if not isinstance(obj, dict):
            return
        usage = obj.get("usage")
        if not isinstance(usage, dict) and isinstance(obj.get("response"), dict):
            usage = obj["response"].get("usage")
        if not isinstance(usage, dict):
            return
        inp = usage.get("input_tokens", usage.get("prompt_tokens", 0))
        out = usage.get("output_tokens", usage.get("completion_tokens", 0))
        model = obj.get("model") if isinstance(obj.get("model"), str) else self._model
        price_in, price_out = self._prices.get(self._model, (0.0, 0.0))
        if type(inp) is int and type(out) is int:
            cost = (inp * price_in + out * price_out) / 1e6
            self._call.record_usage(
                input_tokens=inp, output_tokens=out, cost=cost, response_model=model
            )

    def _finish(self, error: BaseException | None) -> None:
        if self._closed:
            return
        self._closed = True
        if error is None and not self._streamed:
            self._usage(bytes(self._buffer))
        if error is None and self.failure is not None:
            error = RuntimeError(self.failure)
        self._call.close(error)

    async def aclose(self) -> None:
        """Close the upstream response; a stream left early ends the call here."""
        try:
            await self._inner.aclose()
        finally:
            self._finish(None)


def _event_end(buffer: bytearray) -> int | None:
    """The end of the first complete event in ``buffer`` (after its blank line)."""
    ends = [i + len(sep) for sep in (b"\n\n", b"\r\n\r\n") if (i := buffer.find(sep)) >= 0]
    return min(ends) if ends else None


def governed_transport(
    inner: httpx.AsyncBaseTransport | None = None,
    *,
    ctx: Context | None = None,
    provider: str = "openai",
    prices: Mapping[str, tuple[float, float]] | None = None,
) -> GovernedTransport:
    """A :class:`GovernedTransport` (see the module docstring for the one-line use)."""
    return GovernedTransport(inner, ctx=ctx, provider=provider, prices=prices)
