"""Run comparison: per-run summaries of a metric and their deltas against a reference run."""

from __future__ import annotations

import math
from dataclasses import dataclass

from sqlalchemy.orm import Session

from .range_reads import first_last, mean
from .rollups import Stats
from .series import extremes

__all__ = ["HIGHER_IS_BETTER", "Summary", "delta", "last_tenth", "summarize"]

# Metrics where larger is better; for every other metric the best value is the smallest.
HIGHER_IS_BETTER = frozenset({"reward.mean", "entropy.mean", "gate.weight_mean", "lr", "tokens.count",
                              "sequences.count", "response_len.mean", "response_len.max"})


@dataclass
class Summary:
    first_step: int | None = None
    last_step: int | None = None
    first: float | None = None
    last: float | None = None
    best: float | None = None
    best_step: int | None = None
    worst: float | None = None
    worst_step: int | None = None
    mean_last_10pct: float | None = None
    best_is: str = "min"


def last_tenth(first_step: int, last_step: int) -> tuple[int, int]:
    """The steps of ``mean_last_10pct``: the last 10% (at least one) of ``[first_step, last_step]``."""
    span = last_step - first_step + 1
    return last_step - max(1, math.ceil(span * 0.1)) + 1, last_step


def summarize(
    session: Session, *, run_pk: int, metric: str, lo: int, hi: int, overall: Stats | None = None
) -> Summary:
    """Step range, first and last value, best and worst (with steps) and the mean over the last 10%
    of the metric's steps in ``[lo, hi]``. A NaN anywhere in that last 10% makes its mean NaN.

    ``overall``: the metric's ``[min, min_step, max, max_step, nan_step]`` over ``[lo, hi]`` when the
    caller has it already (the downsampled series computes it on the way).
    """
    out = Summary(best_is="max" if metric in HIGHER_IS_BETTER else "min")
    fl = first_last(session, run_pk=run_pk, metric=metric, lo=lo, hi=hi)
    if fl is None:
        return out
    (out.first_step, out.first), (out.last_step, out.last) = fl
    st = overall if overall is not None else extremes(session, run_pk=run_pk, metric=metric, lo=lo, hi=hi)
    if st is not None and st[0] is not None:
        lo_pair, hi_pair = (st[0], st[1]), (st[2], st[3])
        best, worst = (hi_pair, lo_pair) if out.best_is == "max" else (lo_pair, hi_pair)
        out.best, out.best_step = best
        out.worst, out.worst_step = worst
    start, end = last_tenth(out.first_step, out.last_step)
    out.mean_last_10pct = mean(session, run_pk=run_pk, metric=metric, lo=start, hi=end,
                               nan_free=st is not None and st[4] is None)
    return out


def delta(a: Summary, ref: Summary) -> dict[str, float | None]:
    """``a`` minus ``ref`` for the values both have."""
    out: dict[str, float | None] = {}
    for key in ("first", "last", "best", "worst", "mean_last_10pct"):
        x, y = getattr(a, key), getattr(ref, key)
        if x is None or y is None:
            out[key] = None
        else:
            out[key] = x - y  # inf - inf is NaN: the honest answer
    return out
