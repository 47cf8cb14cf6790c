"""Decoding an ingest body (``POST /runs/{run_id}/steps``): gzip with a cap, JSON, then the wire's checks.

The validation itself is :func:`sapo_monitor.client.wire.decode_steps` (the one contract); this module
maps its :class:`~sapo_monitor.client.wire.WireError` to a 422 (413 for too many steps) whose ``loc``
starts with ``"body"``.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

import orjson
from sapo_monitor.client.wire import BatchTooLarge, StepRecord, WireError, decode_steps

from .errors import BadRequest, PayloadTooLarge

__all__ = ["decode_body", "decode_json", "parse_steps"]


def decode_body(raw: bytes, content_encoding: str | None, *, max_decoded: int) -> bytes:
    """Undo ``Content-Encoding: gzip`` with a cap on the decompressed size (no zip bombs)."""
    encoding = (content_encoding or "identity").strip().lower()
    if encoding in ("", "identity"):
        return raw
    if encoding not in ("gzip", "x-gzip"):
        raise BadRequest(f"unsupported Content-Encoding {encoding!r} (use gzip or none)",
                         ["header", "content-encoding"])
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(raw, max_decoded + 1)
    except zlib.error as exc:
        raise BadRequest(f"body is not valid gzip: {exc}", ["body"]) from exc
    if len(out) > max_decoded:
        raise PayloadTooLarge(f"decompressed body is larger than the limit of {max_decoded} bytes", ["body"])
    if not inflater.eof:
        raise BadRequest("body is truncated gzip", ["body"])
    return out


def decode_json(raw: bytes) -> Any:
    """JSON with the bare ``NaN`` / ``Infinity`` tokens Python's ``json`` writes also accepted."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(raw)  # slower, but accepts NaN / Infinity / -Infinity tokens
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"body is not valid JSON: {exc}", ["body"]) from exc


def parse_steps(doc: Any, *, now: float, known_names: set[str]) -> list[StepRecord]:
    """Validate a decoded batch; its steps sorted by step, the last of any duplicate kept (``time`` filled)."""
    try:
        return decode_steps(doc, now=now, known_names=known_names)
    except BatchTooLarge as exc:
        raise PayloadTooLarge(exc.reason, ["body", *exc.loc]) from None
    except WireError as exc:
        raise BadRequest(exc.reason, ["body", *exc.loc]) from None
