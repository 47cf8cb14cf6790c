"""The step record, the run spec, and the batch: how the client writes them, how the service checks them.

:func:`decode_steps` is the one validating decoder of a batch (the service's ingest uses it; a
spool replay can too). A 5,000-step batch carries ~300,000 values, so it walks the decoded JSON
once with C-level fast paths instead of building a model per value, and raises
:class:`~.encoding.WireError` with the path of the first bad field (``["steps", 3, "metrics", "loss"]``).
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .catalogue import CATALOGUE, LOG_RATIO_HIST_BINS, LOG_RATIO_HIST_NAME
from .encoding import INT64_MAX, WireError, decode_float, encode_float
from .names import METRIC_NAME_MAX_LEN, is_metric_name

__all__ = [
    "MAX_HIST_BINS",
    "MAX_STEP",
    "MAX_STEPS_PER_BATCH",
    "MAX_TIME",
    "SCHEMA_VERSION",
    "BatchTooLarge",
    "RunSpec",
    "StepRecord",
    "decode_steps",
    "encode_batch",
    "known_metric_names",
]

SCHEMA_VERSION = 1
MAX_STEPS_PER_BATCH = 5000
MAX_STEP = 2**62  # steps are in [0, MAX_STEP): a signed 64-bit column with room to spare
MAX_HIST_BINS = 1000
MAX_TIME = 1e11  # epoch seconds
_KNOWN_NAMES_CAP = 100_000
_JUST_FLOAT = frozenset({float})
_JUST_INT = frozenset({int})


class BatchTooLarge(WireError):
    """More step records than :data:`MAX_STEPS_PER_BATCH` in one batch (the service answers 413)."""


@dataclass(frozen=True)
class StepRecord:
    """One optimizer step of one run: what the client sends, what the service stores and evaluates.

    ``time`` is epoch seconds (None: the service uses the arrival time). Metric values are floats,
    NaN and infinities included.
    """

    step: int
    time: float | None
    metrics: dict[str, float]
    histograms: dict[str, list[int]] = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "step": self.step,
            "metrics": {k: encode_float(v) for k, v in self.metrics.items()},
        }
        if self.time is not None:
            doc["time"] = self.time
        if self.histograms:
            doc["histograms"] = {k: list(v) for k, v in self.histograms.items()}
        return doc

    @classmethod
    def from_wire(cls, doc: Mapping[str, Any]) -> StepRecord:
        """One record, checked as :func:`decode_steps` checks a batch (``time`` absent stays None)."""
        return decode_steps({"schema": SCHEMA_VERSION, "steps": [doc]}, now=None, known_names=None)[0]


@dataclass(frozen=True)
class RunSpec:
    """What ``PUT /api/v1/runs/{run_id}`` carries: the run's identity and metadata."""

    project: str = "default"
    name: str | None = None
    algorithm: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    status: str | None = None  # "running" | "finished" | "failed"

    def to_wire(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"project": self.project, "config": self.config, "tags": self.tags}
        for key in ("name", "algorithm", "status"):
            if getattr(self, key) is not None:
                doc[key] = getattr(self, key)
        return doc


def encode_batch(steps: Iterable[StepRecord], *, compress: bool = True) -> bytes:
    """Serialise a batch of step records as the request body (gzip by default)."""
    body = json.dumps(
        {"schema": SCHEMA_VERSION, "steps": [s.to_wire() for s in steps]},
        separators=(",", ":"),
        allow_nan=False,  # non-finite values were encoded as strings above
    ).encode()
    return gzip.compress(body, compresslevel=5) if compress else body


def _histograms(doc: Any, loc: list) -> dict[str, list[int]]:
    if not isinstance(doc, dict):
        raise WireError("must be an object of name -> list of counts", loc)
    out: dict[str, list[int]] = {}
    for name, counts in doc.items():
        here = [*loc, name]
        if name != LOG_RATIO_HIST_NAME and not is_metric_name(name):
            raise WireError(f"histogram name must match [a-z0-9_.]+ (at most {METRIC_NAME_MAX_LEN} chars)", here)
        if not isinstance(counts, list):
            raise WireError("must be a list of non-negative integers", here)
        if name == LOG_RATIO_HIST_NAME and len(counts) != LOG_RATIO_HIST_BINS:
            raise WireError(f"must have exactly {LOG_RATIO_HIST_BINS} counts, got {len(counts)}", here)
        if len(counts) > MAX_HIST_BINS:
            raise WireError(f"at most {MAX_HIST_BINS} bins", here)
        if counts and not (set(map(type, counts)) <= _JUST_INT and min(counts) >= 0 and max(counts) <= INT64_MAX):
            for i, c in enumerate(counts):
                if type(c) is not int or c < 0 or c > INT64_MAX:
                    raise WireError("must be a non-negative integer below 2**63", [*here, i])
        out[name] = counts
    return out


def _metrics(doc: dict, loc: list, known_names: set[str] | None) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for name, v in doc.items():
        if known_names is None or name not in known_names:
            if not is_metric_name(name):
                raise WireError(f"metric name must match [a-z0-9_.]+ (at most {METRIC_NAME_MAX_LEN} characters)",
                                [*loc, "metrics", name])
            if known_names is not None and len(known_names) < _KNOWN_NAMES_CAP:
                known_names.add(name)
        if type(v) is float:
            metrics[name] = v
            continue
        try:
            metrics[name] = decode_float(v)
        except WireError as exc:
            raise WireError(exc.reason, [*loc, "metrics", name]) from None
    return metrics


def decode_steps(doc: Any, *, now: float | None, known_names: set[str] | None) -> list[StepRecord]:
    """Validate a decoded batch; return its steps sorted by step, the last of any duplicate kept.

    ``now`` fills a missing ``time``. ``known_names`` caches metric names already checked against
    the name rule (shared across requests: the names a trainer sends, catalogue or its own, are a small
    fixed set, so after the first batch a step's metrics are checked in C). Raises :class:`WireError`
    (:class:`BatchTooLarge` above :data:`MAX_STEPS_PER_BATCH` records).
    """
    if not isinstance(doc, dict):
        raise WireError("body must be a JSON object with 'schema' and 'steps'")
    schema = doc.get("schema")
    if schema != SCHEMA_VERSION or type(schema) is not int:
        raise WireError(f"unsupported schema {schema!r}; this side speaks schema {SCHEMA_VERSION}", ["schema"])
    steps = doc.get("steps")
    if not isinstance(steps, list):
        raise WireError("must be a list of step records", ["steps"])
    if len(steps) > MAX_STEPS_PER_BATCH:
        raise BatchTooLarge(f"batch has {len(steps)} steps; the limit is {MAX_STEPS_PER_BATCH} steps per request",
                            ["steps"])
    by_step: dict[int, StepRecord] = {}
    for i, rec in enumerate(steps):
        loc: list = ["steps", i]
        if not isinstance(rec, dict):
            raise WireError("must be an object with 'step' and 'metrics'", loc)
        step = rec.get("step")
        if type(step) is not int or not 0 <= step < MAX_STEP:
            raise WireError(f"must be an integer in [0, {MAX_STEP})", [*loc, "step"])
        t = rec.get("time")
        if t is None:
            t = now
        elif type(t) not in (float, int) or not 0 <= t <= MAX_TIME:
            raise WireError(f"must be epoch seconds (a number in [0, {MAX_TIME:g}]) or absent", [*loc, "time"])
        metrics_doc = rec.get("metrics", {})
        if not isinstance(metrics_doc, dict):
            raise WireError("must be an object of metric name -> value", [*loc, "metrics"])
        if (known_names is not None and metrics_doc.keys() <= known_names
                and set(map(type, metrics_doc.values())) <= _JUST_FLOAT):
            metrics: dict[str, float] = metrics_doc  # the common case: checked in C, no copy
        else:
            metrics = _metrics(metrics_doc, loc, known_names)
        hist_doc = rec.get("histograms")
        histograms = _histograms(hist_doc, [*loc, "histograms"]) if hist_doc is not None else {}
        by_step[step] = StepRecord(step, None if t is None else float(t), metrics, histograms)
    return [by_step[s] for s in sorted(by_step)]


def known_metric_names() -> set[str]:
    """A fresh cache for :func:`decode_steps`, seeded with the catalogue."""
    return set(CATALOGUE)
