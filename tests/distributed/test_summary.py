"""The mergeable step summary in one process: ranks' summaries merged equal one computation of all tokens."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from sapo_monitor.client.stats import StepAccumulator, compute_step_stats, sketch
from sapo_monitor.client.stats.summary import StepSummary, merge

from tests.client.test_stats import assert_matches, make_case


def split_rows(case: dict, bounds: list[int]) -> list[dict]:
    parts = []
    for lo, hi in itertools.pairwise(bounds):
        parts.append({k: v[:, lo:hi] if k.startswith("experts") else v[lo:hi] for k, v in case.items()})
    return parts


def merged(parts: list[dict], compact: bool) -> dict:
    summaries = []
    for part in parts:
        acc = StepAccumulator(compact=compact)
        acc.add(**part)
        summaries.append(StepSummary.decode(acc.summaries()[0].encode()))  # through the bytes ranks send
    return merge(summaries).stats()


@pytest.mark.parametrize("compact", [True, False])
def test_merged_ranks_equal_one_computation(compact):
    case = make_case(3, B=24, T=40)
    whole = compute_step_stats(**case)
    got = merged(split_rows(case, [0, 7, 15, 24]), compact)
    # Sorted log-ratios from every rank: exact quantiles; grid cells: within the 1/512 bound.
    assert_matches(got, whole, exact_quantiles=compact)


def test_grid_merge_is_within_the_bound_and_outer_values_exact(monkeypatch):
    monkeypatch.setattr(sketch, "EXACT_QUANTILES_UP_TO", 0)  # force the grid on the merge side too
    case = make_case(5, B=30, T=64, spread=4.0)  # many log-ratios beyond +-8
    whole = compute_step_stats(**case)
    got = merged(split_rows(case, [0, 10, 20, 30]), True)
    assert_matches(got, whole)
    assert got["log_ratio.abs_max"] == whole["log_ratio.abs_max"]


def test_empty_ranks_and_an_empty_merge():
    case = make_case(1, B=8, T=12)
    acc = StepAccumulator()
    acc.add(**case)
    assert merge([StepSummary(), acc.summaries()[0], StepSummary()]).stats() == acc.result()
    assert merge([StepSummary(), StepSummary()]).stats() == {}


def test_nonfinite_and_extremes_from_one_rank():
    parts = split_rows(make_case(2, B=12, T=16), [0, 4, 8, 12])
    parts[1]["logp_new"][0, 0] = math.nan
    parts[2]["logp_new"][1, 0] = parts[2]["logp_old"][1, 0] + 9.5
    got = merged(parts, True)
    assert got["nonfinite.token_count"] == 1
    assert got["log_ratio.abs_max"] == pytest.approx(9.5, rel=1e-9)
    assert got["ratio.max"] == pytest.approx(math.exp(9.5), rel=1e-9)
    whole = compute_step_stats(**{k: torch.cat([p[k] for p in parts], 1 if k.startswith("experts") else 0)
                                  for k in parts[0]})
    assert_matches(got, whole, exact_quantiles=True)
