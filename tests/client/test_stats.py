"""Every catalogue statistic against an independent float64 numpy computation (tests/client/reference.py)."""

from __future__ import annotations

import math

import pytest
import torch
from sapo_monitor.client import wire
from sapo_monitor.client.errors import ConfigError, InputError
from sapo_monitor.client.stats import StatsConfig, StepAccumulator, compute_step_stats

from tests.client.reference import reference_stats

QUANTILE_KEYS = {f"log_ratio.{p}" for p in ("p01", "p05", "p50", "p95", "p99")}
GRID_WIDTH = 1 / 512  # documented quantile tolerance (inside the spec's 0.01)
STEP_SCALARS = {"loss", "grad_norm", "lr"}  # come from end_step, not from tensors


def assert_matches(got: dict, ref: dict, *, rel: float = 1e-9, abs_: float = 1e-12, q_tol: float = GRID_WIDTH,
                   exact_quantiles: bool = False, hist: bool = True) -> None:
    assert set(got) == set(ref), f"only in client: {set(got) - set(ref)}; only in reference: {set(ref) - set(got)}"
    for key, want in ref.items():
        have = got[key]
        if key == "hist.log_ratio":
            if hist:
                assert have == want, key
            else:
                assert sum(have) == sum(want) and sum(abs(h - w) for h, w in zip(have, want, strict=True)) <= 2, key
        elif key in QUANTILE_KEYS:
            tol = 1e-12 if exact_quantiles else q_tol
            assert abs(have - want) <= tol + 1e-12 * abs(want), (key, have, want)
        else:
            assert isinstance(have, float) and math.isfinite(have), (key, have)
            assert math.isclose(have, want, rel_tol=rel, abs_tol=abs_), (key, have, want)


def make_case(seed: int = 0, B: int = 12, T: int = 24, spread: float = 0.3, pad: float = 0.25,
              dtype: torch.dtype = torch.float64, moe: bool = True) -> dict:
    g = torch.Generator().manual_seed(seed)
    logp_old = -torch.rand(B, T, generator=g, dtype=torch.float64) * 4 - 0.01
    logp_new = logp_old + spread * torch.randn(B, T, generator=g, dtype=torch.float64)
    mask = (torch.rand(B, T, generator=g) > pad).float()
    mask[:, 0] = 1.0
    advantages = torch.randn(B, generator=g, dtype=torch.float64)
    advantages[:2] = 0.0
    case = dict(
        logp_new=logp_new.to(dtype), logp_old=logp_old.to(dtype), advantages=advantages.to(dtype), mask=mask,
        entropy=torch.rand(B, T, generator=g, dtype=torch.float64).to(dtype) * 3,
        rewards=torch.rand(B, generator=g, dtype=torch.float64).to(dtype),
        logp_rollout=(logp_old + 0.02 * torch.randn(B, T, generator=g, dtype=torch.float64)).to(dtype),
    )
    if moe:
        experts_old = torch.randint(0, 6, (3, B, T, 2), generator=g)
        experts_new = experts_old.clone()
        flip = torch.rand(3, B, T, generator=g) < 0.3
        experts_new[..., 0] = torch.where(flip, (experts_old[..., 0] + 1) % 6, experts_old[..., 0])
        experts_new = experts_new.flip(-1)  # the order within the chosen set must not matter
        case.update(experts_old=experts_old, experts_new=experts_new)
    return case


def run_both(case: dict, cfg: StatsConfig = StatsConfig()) -> tuple[dict, dict]:
    got = compute_step_stats(**case, config=cfg)
    ref = reference_stats(**case, cfg=cfg)
    return got, ref


def test_random_inputs_cover_every_catalogue_entry():
    got, ref = run_both(make_case(seed=1))
    assert_matches(got, ref)
    assert set(wire.CATALOGUE) - STEP_SCALARS <= set(got), set(wire.CATALOGUE) - STEP_SCALARS - set(got)
    assert got["hist.log_ratio"] and len(got["hist.log_ratio"]) == wire.LOG_RATIO_HIST_BINS
    # The random case is not degenerate: the statistics move away from their on-policy values.
    assert 0 < got["clip.token_frac"] < 1 and 0 < got["clip.seq_frac"] < 1 and got["gate.weight_mean"] < 1
    assert 0 < got["moe.route_flip_frac"] < 1


@pytest.mark.parametrize("seed", [2, 3])
@pytest.mark.parametrize("spread", [0.01, 1.0, 4.0])
def test_random_inputs_several_spreads(seed, spread):
    cfg = StatsConfig(tau_pos=2.0, tau_neg=3.0, eps_low=0.1, eps_high=0.28, saturation_threshold=0.5)
    got, ref = run_both(make_case(seed=seed, spread=spread, B=9, T=40), cfg)
    assert_matches(got, ref)


def test_quantiles_are_exact_for_ties_and_few_values():
    B, T = 3, 5
    logp_old = torch.full((B, T), -1.0, dtype=torch.float64)
    logp_new = logp_old + torch.tensor([[0.25, 0.25, 0.25, -0.5, 0.25]] * B, dtype=torch.float64)
    case = dict(logp_new=logp_new, logp_old=logp_old, advantages=torch.tensor([1.0, -1.0, 0.5], dtype=torch.float64),
                mask=torch.ones(B, T))
    got, ref = run_both(case)
    assert_matches(got, ref, exact_quantiles=True)
    assert got["log_ratio.p50"] == 0.25 and got["log_ratio.std"] == pytest.approx(0.3, abs=1e-12)


def test_all_tokens_tied_at_ratio_one():
    case = dict(logp_new=torch.full((4, 6), -2.0), logp_old=torch.full((4, 6), -2.0),
                advantages=torch.tensor([1.0, -2.0, 3.0, -4.0]), mask=torch.ones(4, 6))
    got, ref = run_both(case)
    assert_matches(got, ref, exact_quantiles=True)
    assert got["ratio.std"] == 0.0 and got["gate.weight_mean"] == 1.0 and got["gate.saturated_frac"] == 0.0
    assert got["kl.k3"] == 0.0 and got["clip.token_frac"] == 0.0 and got["clip.seq_frac"] == 0.0


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_all_positive_or_all_negative_advantages(sign):
    case = make_case(seed=4, moe=False)
    case["advantages"] = sign * (case["advantages"].abs() + 0.1)
    got, ref = run_both(case)
    assert_matches(got, ref)
    present, absent = ("pos", "neg") if sign > 0 else ("neg", "pos")
    assert got[f"sign.{present}.token_frac"] == 1.0 and got[f"sign.{present}.grad_share"] == 1.0
    assert got[f"sign.{absent}.token_frac"] == 0.0 and f"sign.{absent}.ratio_mean" not in got
    clip = "clip.token_frac_high" if sign > 0 else "clip.token_frac_low"
    assert got["clip.token_frac"] == got[clip]


def test_zero_advantages_leave_gate_statistics_absent():
    case = make_case(seed=5, moe=False)
    case["advantages"] = torch.zeros_like(case["advantages"])
    got, ref = run_both(case)
    assert_matches(got, ref)
    assert got["sign.zero.token_frac"] == 1.0 and got["groups.zero_signal_frac"] == 1.0
    for key in ("gate.weight_mean", "gate.value_mean", "gate.saturated_frac", "sign.pos.grad_share",
                "sign.pos.ratio_mean", "sign.neg.ratio_mean"):
        assert key not in got
    assert got["clip.seq_frac"] == 0.0


def test_empty_mask_gives_counts_only():
    case = make_case(seed=6)
    case["mask"] = torch.zeros_like(case["mask"])
    got, ref = run_both(case)
    assert_matches(got, ref)
    assert got["tokens.count"] == 0 and got["sequences.count"] == 0
    assert set(got) == {"tokens.count", "sequences.count", "nonfinite.token_count", "hist.log_ratio", "reward.mean",
                        "reward.std"}
    assert sum(got["hist.log_ratio"]) == 0


def test_some_empty_rows_are_not_sequences():
    case = make_case(seed=7)
    case["mask"][3:6] = 0.0
    got, ref = run_both(case)
    assert_matches(got, ref)
    assert got["sequences.count"] == 12 - 3


def test_nonfinite_tokens_are_counted_and_excluded():
    case = make_case(seed=8)
    ln = case["logp_new"]
    ln[0, 0] = math.nan
    ln[1, 0] = math.inf
    ln[2, 0] = -math.inf
    case["logp_old"][3, 0] = -math.inf  # lr = +inf
    case["mask"][4, :] = 0.0
    ln[4, 1] = math.nan  # padding: ignored entirely
    case["logp_old"][4, 2] = math.inf
    case["mask"][5, :] = 0.0
    case["mask"][5, 0] = 1.0
    ln[5, 0] = math.nan  # a sequence whose only token is non-finite: no sequence ratio
    got, ref = run_both(case)
    assert_matches(got, ref)
    assert got["nonfinite.token_count"] == 5
    assert all(math.isfinite(v) for k, v in got.items() if k != "hist.log_ratio")
    assert sum(got["hist.log_ratio"]) == got["tokens.count"] - 5


def test_single_token_sequences():
    case = make_case(seed=9, T=1, pad=0.0)
    got, ref = run_both(case)
    assert_matches(got, ref)
    assert got["seq.log_ratio_dispersion"] == 0.0 and got["response_len.max"] == 1.0
    assert got["seq_ratio.mean"] == pytest.approx(got["ratio.mean"], rel=1e-12)


@pytest.fixture(params=["sorted", "grid"])
def quantile_path(request, monkeypatch):
    """Small CPU steps sort their log-ratios; large ones (forced here) use the on-device grid."""
    from sapo_monitor.client.stats import sketch

    if request.param == "grid":
        monkeypatch.setattr(sketch, "EXACT_QUANTILES_UP_TO", 0)
    return request.param


def test_quantiles_outside_the_grid_are_exact(quantile_path):
    case = make_case(seed=10, spread=12.0, moe=False)  # many |lr| > 8: order statistics in the tails
    got, ref = run_both(case)
    assert_matches(got, ref)
    assert abs(got["log_ratio.p01"]) > 8 and abs(got["log_ratio.p99"]) > 8
    assert got["log_ratio.p99"] == pytest.approx(ref["log_ratio.p99"], abs=1e-12)


def test_large_sample_quantiles_within_tolerance(quantile_path):
    case = make_case(seed=11, B=64, T=256, spread=0.2, moe=False)
    got, ref = run_both(case)
    assert_matches(got, ref)
    assert max(abs(got[k] - ref[k]) for k in QUANTILE_KEYS) <= 0.01


@pytest.mark.parametrize("shape", [(12, 24), (40, 2048)])  # the second is three CPU blocks of sequences
def test_per_token_advantages_and_bool_mask(shape):
    case = make_case(seed=12, B=shape[0], T=shape[1], moe=shape[1] > 24)
    case["advantages"] = torch.randn(*shape, dtype=torch.float64)
    case["advantages"][0] = 0.0
    case["mask"] = case["mask"] > 0
    got, ref = run_both(case)
    assert_matches(got, ref)


def test_micro_batches_equal_one_call(quantile_path):
    case = make_case(seed=13, B=20, T=30)
    case["mask"][5:8] = 0.0  # a micro-batch of empty rows
    case["logp_new"][9, 3] = math.nan
    whole = compute_step_stats(**case)
    acc = StepAccumulator()
    for lo, hi in ((0, 5), (5, 8), (8, 9), (9, 20)):
        part = {k: (v[:, lo:hi] if k.startswith("experts") else v[lo:hi]) for k, v in case.items()}
        acc.add(**part)
    split = acc.result()
    assert set(split) == set(whole)
    for key, want in whole.items():
        if key == "hist.log_ratio":
            assert split[key] == want
        else:
            assert math.isclose(split[key], want, rel_tol=1e-9, abs_tol=1e-12), key
    assert_matches(split, reference_stats(**case, cfg=StatsConfig()))


def test_micro_batches_with_optional_tensors_in_some_calls_only():
    a, b = make_case(seed=14, moe=False), make_case(seed=15, moe=False)
    acc = StepAccumulator()
    acc.add(**a)
    acc.add(**{k: v for k, v in b.items() if k not in ("entropy", "rewards")})
    got = acc.result()
    both = {k: torch.cat([a[k], b[k]]) for k in ("logp_new", "logp_old", "advantages", "mask", "logp_rollout")}
    ref = reference_stats(**both, cfg=StatsConfig())
    only_a = reference_stats(**a, cfg=StatsConfig())
    for key in ("entropy.mean", "reward.mean", "reward.std"):
        assert got[key] == pytest.approx(only_a[key], rel=1e-9)
    for key in ref:
        if key not in ("entropy.mean", "reward.mean", "reward.std", "hist.log_ratio") and key not in QUANTILE_KEYS:
            assert got[key] == pytest.approx(ref[key], rel=1e-9, abs=1e-12), key


def test_float32_inputs_within_1e4_of_float64():
    case64 = make_case(seed=16, B=64, T=128, spread=0.05)
    case32 = {k: (v.float() if v.is_floating_point() else v) for k, v in case64.items()}
    got = compute_step_stats(**case32)
    # Against float64 on the very values float32 holds: tight.
    assert_matches(got, reference_stats(**case32, cfg=StatsConfig()))
    # Against float64 on the original float64 inputs: the spec's tolerance.
    ref = reference_stats(**case64, cfg=StatsConfig())
    for key, want in ref.items():
        if key == "hist.log_ratio":
            assert sum(abs(h - w) for h, w in zip(got[key], want, strict=True)) <= 2
        elif key in QUANTILE_KEYS:
            assert abs(got[key] - want) <= 0.01
        else:
            assert math.isclose(got[key], want, rel_tol=1e-4, abs_tol=1e-6), (key, got[key], want)


def test_bfloat16_inputs_are_accepted():
    case = {k: (v.bfloat16() if v.is_floating_point() else v) for k, v in make_case(seed=17, moe=False).items()}
    got, ref = run_both(case)
    assert_matches(got, ref)


def test_gradients_are_not_required_and_inputs_not_kept():
    case = make_case(seed=18, moe=False)
    case["logp_new"].requires_grad_(True)
    acc = StepAccumulator()
    acc.add(**case)
    import gc
    import weakref

    ref = weakref.ref(case["logp_new"])
    del case
    gc.collect()
    assert ref() is None, "the accumulator kept a reference to the caller's tensor"
    assert acc.result()["tokens.count"] > 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c.update(logp_old=c["logp_old"][:, :-1]), "logp_old"),
        (lambda c: c.update(advantages=c["advantages"][:-1]), "advantages"),
        (lambda c: c.update(logp_new=c["logp_new"].reshape(-1)), "logp_new"),
        (lambda c: c.update(entropy=c["entropy"][:1]), "entropy"),
        (lambda c: c.update(experts_new=c["experts_new"][..., :1]), "experts"),
        (lambda c: c.update(surprise=c["mask"]), "surprise"),
    ],
)
def test_bad_shapes_name_the_argument(change, message):
    case = make_case(seed=19)
    change(case)
    with pytest.raises(InputError, match=message):
        compute_step_stats(**case)


@pytest.mark.parametrize(
    "bad", [{"tau_pos": 0.0}, {"tau_neg": -1.0}, {"eps_low": -0.1}, {"seq_eps_high": -1e-4},
            {"saturation_threshold": 0.0}, {"saturation_threshold": 1.5}, {"tau_pos": math.nan}],
)
def test_stats_config_rejects_meaningless_thresholds(bad):
    with pytest.raises(ConfigError, match=next(iter(bad))):
        StatsConfig(**bad)


def test_histogram_edges_are_the_divisions_the_stats_use():
    # the sketch finds each bin with exact comparisons against j / 10.0: that must be wire's edge list.
    assert [(k - 20) / 10.0 for k in range(41)] == list(wire.LOG_RATIO_HIST_EDGES[1:-1])


@pytest.mark.parametrize("layout", ["sorted", "grid", "masked"])  # the histogram comes from a sort or the grid
@pytest.mark.parametrize("value", [-2.0, -1.9, -1.5, -0.1, 0.0, 0.1, 0.3, 1.9, 2.0])
def test_values_on_histogram_edges_go_to_the_bin_they_open(value, layout, monkeypatch):
    from sapo_monitor.client.stats import sketch

    if layout == "grid":
        monkeypatch.setattr(sketch, "EXACT_QUANTILES_UP_TO", 0)
    lr = torch.tensor([[value, math.nextafter(value, -math.inf), math.nextafter(value, math.inf), 9.0, -9.0]],
                      dtype=torch.float64)
    acc = StepAccumulator(compact=layout != "masked")
    acc.add(lr, torch.zeros_like(lr), torch.ones(1), torch.ones_like(lr))
    got = acc.result()["hist.log_ratio"]
    k = round(value * 10) + 21
    want = [0] * wire.LOG_RATIO_HIST_BINS
    want[0] += 1  # -9: below -2
    want[-1] += 1  # 9: at or above 2
    want[min(k, 41)] += 2  # the edge and the next double up open bin k
    want[k - 1] += 1  # the double below closes bin k - 1
    assert got == want, got


@pytest.mark.parametrize("compact", [True, False])
@pytest.mark.parametrize("shape", [None, (24, 2048)])  # the second is past a CPU chunk (32,768 tokens)
def test_compact_and_masked_layouts_agree(compact, shape):
    case = make_case(seed=20) if shape is None else make_case(seed=20, B=shape[0], T=shape[1])
    case["logp_new"][0, 1] = math.nan
    acc = StepAccumulator(compact=compact)
    acc.add(**case)
    assert_matches(acc.result(), reference_stats(**case, cfg=StatsConfig()))


@pytest.mark.parametrize("per_token", [False, True])
def test_a_batch_of_steps_equals_each_step_alone(per_token):
    # add_steps: K small steps of one shape in one pass (what the monitor does for small steps).
    cases = [make_case(seed=30 + k, B=6, T=9, spread=0.1 * (k + 1)) for k in range(5)]
    cases[2]["mask"][:] = 0.0  # a step without tokens among others
    cases[3]["logp_new"][1, 2] = math.nan
    cases[4]["logp_new"][:] = cases[4]["logp_old"]  # on-policy: every ratio is 1
    if per_token:
        for k, case in enumerate(cases):
            case["advantages"] = torch.randn(6, 9, generator=torch.Generator().manual_seed(k), dtype=torch.float64)
    acc = StepAccumulator()
    acc.add_steps(**{name: torch.stack([case[name] for case in cases]) for name in cases[0]})
    records = acc.results()
    assert len(records) == len(cases)
    for case, got in zip(cases, records, strict=True):
        assert_matches(got, reference_stats(**case, cfg=StatsConfig()), exact_quantiles=True)
    assert records[2]["tokens.count"] == 0 and "ratio.mean" not in records[2]
    assert records[4]["ratio.std"] == 0.0 and records[4]["log_ratio.p99"] == 0.0


def test_a_batch_of_steps_checks_its_shapes():
    case = make_case(seed=40, B=4, T=5, moe=False)
    acc = StepAccumulator()
    with pytest.raises(InputError, match="logp_new"):
        acc.add_steps(**case)  # not [K, B, T]
    stacked = {name: torch.stack([t, t]) for name, t in case.items()}
    stacked["rewards"] = stacked["rewards"][:1]
    with pytest.raises(InputError, match="rewards"):
        acc.add_steps(**stacked)
