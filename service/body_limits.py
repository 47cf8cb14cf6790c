"""ASGI middleware bounding every request body: bytes as sent, and bytes after gzip decoding.

The limit is enforced on the stream, not on ``Content-Length`` alone (a chunked body has none):
bytes are counted as they arrive and reading stops at the first byte over the limit. A body sent
with ``Content-Encoding: gzip`` is inflated here, incrementally, in a worker thread (a bomb never
runs on the event loop) and never past the decoded limit, so each request holds at most about
``max_decoded`` bytes of decoded body; the application sees a plain body. Over a limit the answer
is 413 naming it, whatever the endpoint and whatever it made of the cut-off body.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import BadRequest, PayloadTooLarge, ServiceError

__all__ = ["BodyLimits", "GzipStream"]

_GZIP = ("gzip", "x-gzip")
_DROP = (b"content-encoding", b"content-length")


class GzipStream:
    """Inflates a gzip stream piece by piece, refusing to produce more than ``limit`` bytes in all.

    Concatenated gzip members are read as one stream (what ``gzip.decompress`` does).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._left = limit
        self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)

    def feed(self, data: bytes, final: bool) -> bytes:
        out: list[bytes] = []
        buf = data
        try:
            while buf:
                piece = self._inflater.decompress(buf, self._left + 1)  # at most one byte past the limit
                self._left -= len(piece)
                if self._left < 0:
                    raise PayloadTooLarge(
                        f"decompressed body is larger than the limit of {self.limit} bytes", ["body"])
                out.append(piece)
                if self._inflater.eof:
                    buf = self._inflater.unused_data
                    if buf:
                        self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
                else:
                    buf = self._inflater.unconsumed_tail
        except zlib.error as exc:
            raise BadRequest(f"body is not valid gzip: {exc}", ["body"]) from exc
        if final and not self._inflater.eof:
            raise BadRequest("body is truncated gzip", ["body"])
        return b"".join(out)


@dataclass
class _State:
    received: int = 0
    error: ServiceError | None = None
    started: bool = False
    answered: bool = False


class BodyLimits:
    """Counts each request's body bytes (413 above ``max_body``) and inflates gzip bodies (413 above
    ``max_decoded`` decoded bytes, 422 when the gzip is broken)."""

    def __init__(self, app: ASGIApp, *, max_body: int, max_decoded: int) -> None:
        self.app = app
        self.max_body = max_body
        self.max_decoded = max_decoded

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_body:
            await self._answer(PayloadTooLarge(
                f"body of {int(length)} bytes is larger than the limit of {self.max_body} bytes", ["body"]),
                scope, receive, send)
            return
        encoding = headers.get(b"content-encoding", b"").strip().lower().decode("latin-1")
        inflate = GzipStream(self.max_decoded) if encoding in _GZIP else None
        if inflate is not None:  # downstream sees the decoded body, as if it had been sent plain
            # In place, not a copy: the router records the matched route in this same scope, and the
            # request counters outside this middleware read it (a copy counted gzip ingests as "unmatched").
            scope["headers"] = [(k, v) for k, v in scope.get("headers") or [] if k not in _DROP]
        state = _State()

        async def limited_receive() -> Message:
            message = await receive()
            if message["type"] != "http.request" or state.error is not None:
                return message
            chunk = message.get("body", b"")
            state.received += len(chunk)
            try:
                if state.received > self.max_body:
                    raise PayloadTooLarge(f"body is larger than the limit of {self.max_body} bytes", ["body"])
                if inflate is not None:
                    chunk = await run_in_threadpool(inflate.feed, chunk, not message.get("more_body", False))
            except ServiceError as exc:
                state.error = exc
                raise
            return {**message, "body": chunk}

        async def guarded_send(message: Message) -> None:
            if state.error is not None and not state.started:
                return  # whatever the app made of a cut-off body, the answer is the limit's
            if message["type"] == "http.response.start":
                state.started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if state.error is None or state.started:
                raise
        if state.error is not None and not state.started:
            await self._answer(state.error, scope, receive, send)

    @staticmethod
    async def _answer(error: ServiceError, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {"Connection": "close"}  # the rest of an over-long body is not read
        await JSONResponse(error.body(), status_code=error.status_code, headers=headers)(scope, receive, send)
