"""Fast JSON responses: orjson, with non-finite floats written as the wire strings."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import orjson
from fastapi import Response

__all__ = ["downsampling_doc", "json_response", "wire_value", "wire_values"]

_INF = math.inf


def wire_value(v: float | None) -> float | str | None:
    if v is None:
        return None
    if v != v:
        return "NaN"
    if v == _INF or v == -_INF:
        return "Infinity" if v > 0 else "-Infinity"
    return v


def wire_values(values: Iterable[float | None]) -> list[float | str | None]:
    return [v if (v.__class__ is float and v - v == 0) else wire_value(v) for v in values]


def json_response(doc: Any, status_code: int = 200) -> Response:
    return Response(orjson.dumps(doc), status_code=status_code, media_type="application/json")


def downsampling_doc(width: int | None, max_points: int, lo: int | None, hi: int | None) -> dict[str, Any]:
    """What a series response says about how it was downsampled (``bucket_steps`` None: every step)."""
    return {
        "method": "none" if width is None else "minmax",
        "max_points": max_points,
        "bucket_steps": width,
        "from_step": lo,
        "to_step": hi,
    }
