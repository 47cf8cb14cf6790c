"""Fast JSON responses: orjson, with non-finite floats written as the wire strings."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Response
from sapo_monitor.client.wire import encode_value, encode_values

__all__ = ["downsampling_doc", "json_response", "wire_value", "wire_values"]

# The wire's encoding (sapo_monitor.client.wire), under the names the routers use.
wire_value = encode_value
wire_values = encode_values


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
