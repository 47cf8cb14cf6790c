"""Synthetic metric traces for the alert tests: a healthy run, and one that collapses on schedule."""

from __future__ import annotations

import math
import random

# The collapse trace's schedule (1-based steps) and the firing steps the built-in pack must give.
SURGE_AT = 41  # log_ratio.std jumps 6x
GATE_AT = 50  # gate.saturated_frac 0.02 -> 0.5
COLLAPSE_AT = 60  # entropy and reward collapse
NAN_AT = 75  # the loss becomes NaN
EXPECTED_FIRING = [
    ("ratio_variance_spike", SURGE_AT + 1),  # for_steps 2
    ("gate_saturation", GATE_AT + 2),  # for_steps 3
    ("entropy_collapse", COLLAPSE_AT + 2),  # for_steps 3
    ("reward_decline", COLLAPSE_AT + 5),  # the warning: EWMA 20% below its best after 1 step, for_steps 5
    ("reward_collapse", COLLAPSE_AT + 3 + 3),  # EWMA needs 3 steps to fall 40% below its best, for_steps 5
    ("nonfinite", NAN_AT),  # at once
]


def healthy_metrics(step: int, rng: random.Random) -> dict[str, float]:
    """One catalogue-shaped step of a healthy run (noise included)."""

    def jit(x: float, rel: float = 0.05) -> float:
        return x * (1.0 + rel * (2.0 * rng.random() - 1.0))

    return {
        "tokens.count": 4096.0,
        "sequences.count": 32.0,
        "ratio.mean": jit(1.0, 0.002),
        "ratio.std": jit(0.05),
        "log_ratio.mean": jit(-0.001),
        "log_ratio.std": jit(0.05),
        "log_ratio.abs_max": jit(0.6, 0.2),
        "log_ratio.p01": jit(-0.15),
        "log_ratio.p99": jit(0.15),
        "kl.k3": jit(0.0012),
        "clip.token_frac": jit(0.01, 0.3),
        "clip.seq_frac": jit(0.02, 0.3),
        "gate.weight_mean": jit(0.98, 0.01),
        "gate.saturated_frac": jit(0.02, 0.3),
        "sign.pos.ratio_std": jit(0.05),
        "sign.neg.ratio_std": jit(0.055),
        "groups.zero_signal_frac": jit(0.1, 0.3),
        "entropy.mean": jit(2.0, 0.03),
        "reward.mean": min(0.45, 0.3 + 0.01 * step) * (1.0 + 0.04 * (2.0 * rng.random() - 1.0)),
        "reward.std": jit(0.3),
        "loss": jit(0.1, 0.5),
        "grad_norm": jit(1.0, 0.2),
        "lr": 1e-5,
        "nonfinite.token_count": 0.0,
    }


def stable_trace(n: int = 120, seed: int = 0) -> list[tuple[int, dict[str, float]]]:
    rng = random.Random(seed)
    return [(s, healthy_metrics(s, rng)) for s in range(1, n + 1)]


def collapse_trace(n: int = 90, seed: int = 1) -> list[tuple[int, dict[str, float]]]:
    """Stable steps, then a ratio-variance surge, gate saturation, entropy and reward collapse, NaN."""
    rng = random.Random(seed)
    out = []
    for s in range(1, n + 1):
        m = healthy_metrics(s, rng)
        if s >= SURGE_AT:
            m["log_ratio.std"] *= 6.0
            m["ratio.std"] *= 6.0
        if s >= GATE_AT:
            m["gate.saturated_frac"] = 0.5 + 0.02 * rng.random()
        if s >= COLLAPSE_AT:
            m["entropy.mean"] = 0.3 + 0.02 * rng.random()
            m["reward.mean"] = 0.05 + 0.01 * rng.random()
        if s >= NAN_AT:
            m["loss"] = math.nan
        out.append((s, m))
    return out
