"""Decoding and validating an ingest body (``POST /runs/{run_id}/steps``) without pydantic per value.

A 5,000-step batch carries ~300,000 metric values; building a model per value would cost more than
storing them. This module walks the decoded JSON once, checks every field, and raises
:class:`~sapo_monitor.service.errors.BadRequest` with the path of the first bad field
(``["body", "steps", 3, "metrics", "ratio.mean"]``).
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass, field
from typing import Any

import orjson
from sapo_monitor.client.wire import (
    LOG_RATIO_HIST_BINS,
    LOG_RATIO_HIST_NAME,
    MAX_STEPS_PER_BATCH,
    METRIC_NAME_RE,
    SCHEMA_VERSION,
)

from .errors import BadRequest, PayloadTooLarge

__all__ = [
    "MAX_HIST_BINS",
    "MAX_METRIC_NAME",
    "MAX_STEP",
    "StepIn",
    "decode_body",
    "decode_json",
    "parse_steps",
]

MAX_METRIC_NAME = 200
MAX_STEP = 2**62  # fits a signed 64-bit column with room to spare
MAX_HIST_BINS = 1000
_NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_FLOAT_TYPES = (float, int)
_JUST_FLOAT = frozenset({float})
_JUST_INT = frozenset({int})


@dataclass(frozen=True)
class StepIn:
    """One validated step: metric values are floats (NaN and infinities included)."""

    step: int
    time: float
    metrics: dict[str, float]
    histograms: dict[str, list[int]] = field(default_factory=dict)


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


def _value(v: Any, loc: list) -> float:
    if type(v) is float:
        return v
    if type(v) is int:
        f = float(v)
        if math.isinf(f):
            raise BadRequest("integer is too large for a float", loc)
        return f
    if type(v) is str and v in _NONFINITE:
        return _NONFINITE[v]
    raise BadRequest(
        "must be a number, or one of the strings 'NaN', 'Infinity', '-Infinity'", loc
    )


def _histograms(doc: Any, loc: list) -> dict[str, list[int]]:
    if not isinstance(doc, dict):
        raise BadRequest("must be an object of name -> list of counts", loc)
    out: dict[str, list[int]] = {}
    for name, counts in doc.items():
        here = [*loc, name]
        if name != LOG_RATIO_HIST_NAME and (not METRIC_NAME_RE.match(name) or len(name) > MAX_METRIC_NAME):
            raise BadRequest(f"histogram name must match [a-z0-9_.]+ (at most {MAX_METRIC_NAME} chars)", here)
        if not isinstance(counts, list):
            raise BadRequest("must be a list of non-negative integers", here)
        if name == LOG_RATIO_HIST_NAME and len(counts) != LOG_RATIO_HIST_BINS:
            raise BadRequest(f"must have exactly {LOG_RATIO_HIST_BINS} counts, got {len(counts)}", here)
        if len(counts) > MAX_HIST_BINS:
            raise BadRequest(f"at most {MAX_HIST_BINS} bins", here)
        if counts and not (set(map(type, counts)) <= _JUST_INT and min(counts) >= 0 and max(counts) < 2**63):
            for i, c in enumerate(counts):
                if type(c) is not int or c < 0 or c >= 2**63:
                    raise BadRequest("must be a non-negative integer", [*here, i])
        out[name] = counts
    return out


def _metrics(doc: dict, loc: list, known_names: set[str]) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for name, v in doc.items():
        if name not in known_names:
            if len(name) > MAX_METRIC_NAME or not METRIC_NAME_RE.match(name):
                raise BadRequest(
                    f"metric name must match [a-z0-9_.]+ (at most {MAX_METRIC_NAME} characters)",
                    [*loc, "metrics", name],
                )
            if len(known_names) < 100_000:
                known_names.add(name)
        metrics[name] = v if type(v) is float else _value(v, [*loc, "metrics", name])
    return metrics


def parse_steps(doc: Any, *, now: float, known_names: set[str]) -> list[StepIn]:
    """Validate a decoded batch; return its steps sorted by step, the last of any duplicate kept.

    ``known_names`` caches metric names already checked against the name pattern (shared across
    requests: the set of names a trainer sends is small and fixed).
    """
    if not isinstance(doc, dict):
        raise BadRequest("body must be a JSON object with 'schema' and 'steps'", ["body"])
    schema = doc.get("schema")
    if schema != SCHEMA_VERSION or type(schema) is not int:
        raise BadRequest(f"unsupported schema {schema!r}; this service speaks schema {SCHEMA_VERSION}",
                         ["body", "schema"])
    steps = doc.get("steps")
    if not isinstance(steps, list):
        raise BadRequest("must be a list of step records", ["body", "steps"])
    if len(steps) > MAX_STEPS_PER_BATCH:
        raise PayloadTooLarge(
            f"batch has {len(steps)} steps; the limit is {MAX_STEPS_PER_BATCH} steps per request",
            ["body", "steps"],
        )
    by_step: dict[int, StepIn] = {}
    for i, rec in enumerate(steps):
        loc: list = ["body", "steps", i]
        if not isinstance(rec, dict):
            raise BadRequest("must be an object with 'step' and 'metrics'", loc)
        step = rec.get("step")
        if type(step) is not int or not 0 <= step < MAX_STEP:
            raise BadRequest(f"must be an integer in [0, {MAX_STEP})", [*loc, "step"])
        t = rec.get("time")
        if t is None:
            t = now
        elif type(t) not in _FLOAT_TYPES or not 0 <= t <= 1e11:
            raise BadRequest("must be epoch seconds (a number in [0, 1e11]) or absent", [*loc, "time"])
        metrics_doc = rec.get("metrics", {})
        if not isinstance(metrics_doc, dict):
            raise BadRequest("must be an object of metric name -> value", [*loc, "metrics"])
        if metrics_doc.keys() <= known_names and set(map(type, metrics_doc.values())) <= _JUST_FLOAT:
            metrics: dict[str, float] = metrics_doc  # the common case: checked in C, no copy
        else:
            metrics = _metrics(metrics_doc, loc, known_names)
        hist_doc = rec.get("histograms")
        histograms = _histograms(hist_doc, [*loc, "histograms"]) if hist_doc is not None else {}
        by_step[step] = StepIn(step, float(t), metrics, histograms)
    return [by_step[s] for s in sorted(by_step)]
