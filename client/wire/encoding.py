"""How non-finite floats travel, and how a free-form JSON tree (a run's ``config``) is checked.

JSON has no NaN or infinities, so they travel as the strings ``"NaN"``, ``"Infinity"`` and
``"-Infinity"`` (any JSON parser reads them); the service also accepts the bare tokens Python's
``json`` writes. Both sides use these functions: nowhere else spells the encoding out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "JSON_MAX_DEPTH",
    "NONFINITE_STRINGS",
    "WireError",
    "decode_float",
    "decode_value",
    "encode_float",
    "encode_tree",
    "encode_value",
    "encode_values",
    "is_nonfinite_string",
]

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# Deepest nesting of a free-form JSON document (a run's config); orjson and PostgreSQL's jsonb stop near 255.
JSON_MAX_DEPTH = 64
NONFINITE_STRINGS: tuple[str, ...] = ("NaN", "Infinity", "-Infinity")
_TO_FLOAT = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_INF = math.inf


class WireError(ValueError):
    """Input that breaks the wire contract: ``loc`` is the path of the bad field, ``reason`` says why."""

    def __init__(self, reason: str, loc: Iterable[str | int] = ()) -> None:
        self.reason = reason
        self.loc: list[str | int] = list(loc)
        where = ".".join(str(p) for p in self.loc)
        super().__init__(f"{where}: {reason}" if where else reason)


def is_nonfinite_string(value: object) -> bool:
    return value.__class__ is str and value in _TO_FLOAT


def encode_float(value: float) -> float | str:
    """A float as it travels: itself when finite, else ``"NaN"`` / ``"Infinity"`` / ``"-Infinity"``."""
    value = float(value)
    if value - value == 0:
        return value
    if value != value:
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def encode_value(value: float | None) -> float | str | None:
    """:func:`encode_float`, with None (no value) kept."""
    return None if value is None else encode_float(value)


def encode_values(values: Iterable[float | None]) -> list[float | str | None]:
    """:func:`encode_value` over a list, the finite floats copied without a call (series responses)."""
    return [v if (v.__class__ is float and v - v == 0) else encode_value(v) for v in values]  # type: ignore[operator]


def decode_float(value: float | int | str) -> float:
    """Inverse of :func:`encode_float`; raises :class:`WireError` (a ``ValueError``) for anything else.

    An integer beyond float range is refused too (``float()`` of it would raise ``OverflowError``).
    """
    if value.__class__ is float:
        return value  # type: ignore[return-value]
    if isinstance(value, bool):
        raise WireError("booleans are not metric values")
    if isinstance(value, int):
        if -1.7976931348623157e308 <= value <= 1.7976931348623157e308:
            return float(value)
        raise WireError("integer is too large for a float (a 64-bit float holds up to about 1.8e308)")
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str) and value in _TO_FLOAT:
        return _TO_FLOAT[value]
    raise WireError("must be a number, or one of the strings 'NaN', 'Infinity', '-Infinity'")


def decode_value(value: Any) -> Any:
    """A stored JSON scalar back to a float where it is one of the wire strings (else unchanged)."""
    return _TO_FLOAT[value] if value.__class__ is str and value in _TO_FLOAT else value


def encode_tree(value: Any, *, loc: Iterable[str | int] = (), max_depth: int = JSON_MAX_DEPTH) -> Any:
    """A JSON tree (a run's config) checked and ready for any JSON writer.

    Non-finite floats become the wire strings (stored and returned faithfully, not as null);
    integers must fit a signed 64-bit integer, nesting at most ``max_depth`` levels, keys strings,
    text without NUL characters or lone surrogates (PostgreSQL stores neither). Raises
    :class:`WireError` naming the path of the first bad value.
    """
    return _tree(value, list(loc), max_depth)


def _tree(value: Any, loc: list[str | int], depth: int) -> Any:
    cls = value.__class__
    if cls is float:
        return value if value - value == 0 else encode_float(value)
    if cls is str:
        _check_str(value, loc)
        return value
    if value is None or cls is bool:
        return value
    if cls is int or isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise WireError("integer is outside the signed 64-bit range", loc)
        return int(value)
    if isinstance(value, float):
        return encode_float(value)
    if isinstance(value, dict):
        if depth <= 0:
            raise WireError(f"nested deeper than {JSON_MAX_DEPTH} levels", loc)
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise WireError("object keys must be strings", loc)
            _check_str(k, [*loc, k])
            out[k] = _tree(v, [*loc, k], depth - 1)
        return out
    if isinstance(value, (list, tuple)):
        if depth <= 0:
            raise WireError(f"nested deeper than {JSON_MAX_DEPTH} levels", loc)
        return [_tree(v, [*loc, i], depth - 1) for i, v in enumerate(value)]
    raise WireError(f"{cls.__name__} is not a JSON value", loc)


def _check_str(value: str, loc: list[str | int]) -> None:
    if "\x00" in value:
        raise WireError("must not contain NUL characters", loc)
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise WireError("must be valid Unicode (no lone surrogates)", loc) from None
