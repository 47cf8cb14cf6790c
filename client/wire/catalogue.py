"""The versioned wire format between the client and the service (stdlib only).

The service imports this module too, so it must never import torch or anything heavy.

A batch on the wire (``POST /api/v1/runs/{run_id}/steps``, gzip allowed)::

    {"schema": 1,
     "steps": [{"step": 12, "time": 1764000000.5,
                "metrics": {"ratio.mean": 1.01, "loss": "NaN"},
                "histograms": {"log_ratio": [42 integers]}}]}

Non-finite floats travel as the strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"`` so that any
JSON parser can read them; the service also accepts the bare tokens Python's ``json`` emits.
"""

from __future__ import annotations

import gzip
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CATALOGUE",
    "LOG_RATIO_HIST_BINS",
    "LOG_RATIO_HIST_EDGES",
    "LOG_RATIO_HIST_NAME",
    "MAX_STEPS_PER_BATCH",
    "METRIC_NAME_RE",
    "SCHEMA_VERSION",
    "RunSpec",
    "StepRecord",
    "decode_float",
    "encode_batch",
    "encode_float",
    "log_ratio_hist_edges",
]

SCHEMA_VERSION = 1
MAX_STEPS_PER_BATCH = 5000
METRIC_NAME_RE = re.compile(r"^[a-z0-9_.]+$")

# hist.log_ratio: lr < -2, then 40 bins of width 0.1 covering [-2, 2) left-closed, then lr >= 2.
LOG_RATIO_HIST_NAME = "log_ratio"
LOG_RATIO_HIST_BINS = 42


def log_ratio_hist_edges() -> list[float]:
    """The 43 bin edges of the log-ratio histogram, ``-inf`` and ``+inf`` at the ends."""
    inner = [round(-2.0 + 0.1 * k, 10) for k in range(41)]
    return [-math.inf, *inner, math.inf]


LOG_RATIO_HIST_EDGES: tuple[float, ...] = tuple(log_ratio_hist_edges())

_NONFINITE_TO_WIRE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
_WIRE_TO_FLOAT = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def encode_float(value: float) -> float | str:
    """A float as it travels: itself when finite, else ``"NaN"`` / ``"Infinity"`` / ``"-Infinity"``."""
    value = float(value)
    if math.isfinite(value):
        return value
    return _NONFINITE_TO_WIRE[repr(value)]


def decode_float(value: float | int | str) -> float:
    """Inverse of :func:`encode_float`; raises ``ValueError`` for anything else."""
    if isinstance(value, bool):
        raise ValueError("booleans are not metric values")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and value in _WIRE_TO_FLOAT:
        return _WIRE_TO_FLOAT[value]
    raise ValueError(f"not a number: {value!r} (non-finite values are 'NaN', 'Infinity', '-Infinity')")


@dataclass(frozen=True)
class StepRecord:
    """One optimizer step of one run, as the client hands it to delivery."""

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
        return cls(
            step=int(doc["step"]),
            time=None if doc.get("time") is None else float(doc["time"]),
            metrics={k: decode_float(v) for k, v in doc.get("metrics", {}).items()},
            histograms={k: [int(c) for c in v] for k, v in doc.get("histograms", {}).items()},
        )


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


# The metric catalogue: wire name -> one-line meaning (used for Prometheus HELP text and docs).
# Statistics over an empty set are absent from a record, never NaN.
CATALOGUE: dict[str, str] = {
    "tokens.count": "Masked (response) tokens in the step.",
    "sequences.count": "Sequences with at least one masked token.",
    "response_len.mean": "Mean masked tokens per sequence.",
    "response_len.max": "Most masked tokens in one sequence.",
    "ratio.mean": "Mean token importance ratio r = pi_theta / pi_old.",
    "ratio.std": "Population std of token importance ratios.",
    "ratio.min": "Smallest token importance ratio.",
    "ratio.max": "Largest token importance ratio.",
    "log_ratio.mean": "Mean token log-ratio log pi_theta - log pi_old.",
    "log_ratio.std": "Population std of token log-ratios.",
    "log_ratio.abs_max": "Largest absolute token log-ratio.",
    "log_ratio.p01": "1st percentile of token log-ratios.",
    "log_ratio.p05": "5th percentile of token log-ratios.",
    "log_ratio.p50": "Median token log-ratio.",
    "log_ratio.p95": "95th percentile of token log-ratios.",
    "log_ratio.p99": "99th percentile of token log-ratios.",
    "kl.k1": "KL(pi_old || pi_theta) estimate k1 = mean(-log r).",
    "kl.k3": "KL(pi_old || pi_theta) estimate k3 = mean(r - 1 - log r).",
    "clip.token_frac_high": "Share of tokens with A > 0 and r > 1 + eps_high (GRPO would clip).",
    "clip.token_frac_low": "Share of tokens with A < 0 and r < 1 - eps_low (GRPO would clip).",
    "clip.token_frac": "Share of tokens GRPO's hard clip would silence.",
    "seq_ratio.mean": "Mean sequence ratio s_i (geometric mean of token ratios).",
    "seq_ratio.std": "Population std of sequence ratios.",
    "seq_ratio.min": "Smallest sequence ratio.",
    "seq_ratio.max": "Largest sequence ratio.",
    "clip.seq_frac": "Share of sequences GSPO's sequence clip would silence.",
    "seq.log_ratio_dispersion": "Mean over sequences of the std of log-ratios within the sequence.",
    "gate.weight_mean": "Mean SAPO gradient weight w = 4p(1-p) over tokens with A != 0.",
    "gate.value_mean": "Mean SAPO gate value f = 4p/tau over tokens with A != 0.",
    "gate.saturated_frac": "Share of tokens with A != 0 whose SAPO weight w is below the saturation threshold.",
    "sign.pos.token_frac": "Share of tokens with positive advantage.",
    "sign.pos.ratio_mean": "Mean ratio of positive-advantage tokens.",
    "sign.pos.ratio_std": "Std of ratio of positive-advantage tokens.",
    "sign.pos.log_ratio_mean": "Mean log-ratio of positive-advantage tokens.",
    "sign.pos.gate_weight_mean": "Mean SAPO weight of positive-advantage tokens.",
    "sign.pos.saturated_frac": "Share of positive-advantage tokens with saturated SAPO gate.",
    "sign.pos.clip_frac": "Share of positive-advantage tokens with r > 1 + eps_high.",
    "sign.pos.grad_share": "Share of gradient mass sum(w|A|) from positive-advantage tokens.",
    "sign.neg.token_frac": "Share of tokens with negative advantage.",
    "sign.neg.ratio_mean": "Mean ratio of negative-advantage tokens.",
    "sign.neg.ratio_std": "Std of ratio of negative-advantage tokens.",
    "sign.neg.log_ratio_mean": "Mean log-ratio of negative-advantage tokens.",
    "sign.neg.gate_weight_mean": "Mean SAPO weight of negative-advantage tokens.",
    "sign.neg.saturated_frac": "Share of negative-advantage tokens with saturated SAPO gate.",
    "sign.neg.clip_frac": "Share of negative-advantage tokens with r < 1 - eps_low.",
    "sign.neg.grad_share": "Share of gradient mass sum(w|A|) from negative-advantage tokens.",
    "sign.zero.token_frac": "Share of tokens with zero advantage.",
    "groups.zero_signal_frac": "Share of sequences with |A| < 1e-8 (no learning signal).",
    "entropy.mean": "Mean token entropy of the current policy.",
    "reward.mean": "Mean reward of the step's sequences.",
    "reward.std": "Population std of the step's rewards.",
    "mismatch.log_ratio_mean": "Mean of logp_old - logp_rollout (training-inference mismatch).",
    "mismatch.kl_k3": "k3 KL estimate of the training-inference mismatch.",
    "mismatch.abs_max": "Largest |logp_old - logp_rollout|.",
    "moe.route_flip_frac": "Share of (layer, token) pairs whose chosen expert set changed.",
    "loss": "Training loss of the optimizer step.",
    "grad_norm": "Gradient norm of the optimizer step (before clipping).",
    "lr": "Learning rate of the optimizer step.",
    "nonfinite.token_count": "Masked tokens whose log-ratio is NaN or infinite.",
}
