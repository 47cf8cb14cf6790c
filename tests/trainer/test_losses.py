"""Each loss and its gradient against the primer's closed forms on hand-made tensors."""

from __future__ import annotations

import math

import pytest
import torch
from sapo_monitor.trainer.losses import LossConfig, get_loss, grpo, gspo, pg, sapo


def _t(values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def _inputs(
    ratios: list[list[float]], mask: list[list[float]]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """logp_old = some fixed values; logp_new = logp_old + log(ratio), a leaf that records gradients."""
    r = torch.tensor(ratios, dtype=torch.float64)
    logp_old = -torch.arange(1, r.numel() + 1, dtype=torch.float64).view_as(r) / 10
    logp_new = (logp_old + r.log()).detach().requires_grad_(True)
    return logp_new, logp_old, torch.tensor(mask, dtype=torch.float64)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _token_weight(mask: torch.Tensor, i: int) -> float:
    """Weight of one token of sequence i in the sequence-mean of token-means."""
    n_seq = int((mask.sum(1) > 0).sum())
    return 1.0 / float(mask[i].sum()) / n_seq


# ---------------------------------------------------------------------------- SAPO
def test_sapo_loss_and_gradient_match_closed_form() -> None:
    ratios = [[1.0, 1.5, 0.5], [2.0, 0.8, 1.0]]
    mask = [[1, 1, 1], [1, 1, 0]]
    adv = _t([0.7, -1.3])
    cfg = LossConfig(tau_pos=1.0, tau_neg=1.05)
    logp_new, logp_old, m = _inputs(ratios, mask)
    out = sapo(logp_new, logp_old, adv, m, cfg)
    out.loss.backward()

    expected_loss = 0.0
    for i, row in enumerate(ratios):
        a = float(adv[i])
        tau = cfg.tau_pos if a > 0 else cfg.tau_neg
        for t, r in enumerate(row):
            if not mask[i][t]:
                assert logp_new.grad[i, t] == 0.0
                continue
            p = _sigmoid(tau * (r - 1))
            expected_loss -= _token_weight(m, i) * (4 / tau) * p * a
            # d loss / d logp_new = -weight * w(r) * r * A with w = 4 p (1 - p)
            w = 4 * p * (1 - p)
            assert logp_new.grad[i, t].item() == pytest.approx(-_token_weight(m, i) * w * r * a, rel=1e-12)
    assert out.loss.item() == pytest.approx(expected_loss, rel=1e-12)
    assert torch.allclose(
        out.ratio[m > 0], _t([r for i, row in enumerate(ratios) for t, r in enumerate(row) if mask[i][t]])
    )


def test_sapo_on_policy_weight_is_one() -> None:
    """w(1) = 1: at r = 1 the gradient is the plain policy gradient -weight * A, for either sign."""
    logp_new, logp_old, m = _inputs([[1.0, 1.0], [1.0, 1.0]], [[1, 1], [1, 1]])
    adv = _t([2.0, -0.5])
    sapo(logp_new, logp_old, adv, m, LossConfig(tau_pos=3.0, tau_neg=7.0)).loss.backward()
    expected = _t([[-0.25 * 2.0, -0.25 * 2.0], [0.25 * 0.5, 0.25 * 0.5]])
    assert torch.allclose(logp_new.grad, expected, rtol=1e-12, atol=0)


def test_sapo_temperature_follows_advantage_sign() -> None:
    r = 1.6
    logp_new, logp_old, m = _inputs([[r], [r]], [[1], [1]])
    adv = _t([1.0, -1.0])
    tau_pos, tau_neg = 1.0, 3.0
    sapo(logp_new, logp_old, adv, m, LossConfig(tau_pos=tau_pos, tau_neg=tau_neg)).loss.backward()
    weight = 0.5  # two one-token sequences

    def w(tau: float) -> float:
        p = _sigmoid(tau * (r - 1))
        return 4 * p * (1 - p)

    assert logp_new.grad[0, 0].item() == pytest.approx(-weight * w(tau_pos) * r, rel=1e-12)
    assert logp_new.grad[1, 0].item() == pytest.approx(weight * w(tau_neg) * r, rel=1e-12)
    # The negative side's gate closes faster: a smaller weight at the same ratio.
    assert abs(logp_new.grad[1, 0].item()) < abs(logp_new.grad[0, 0].item())
    assert w(tau_neg) != pytest.approx(w(tau_pos))


def test_sapo_default_temperatures_are_the_papers() -> None:
    cfg = LossConfig()
    assert (cfg.tau_pos, cfg.tau_neg) == (1.0, 1.05)
    assert (cfg.eps_low, cfg.eps_high) == (0.2, 0.2)
    assert (cfg.seq_eps_low, cfg.seq_eps_high) == (3e-4, 4e-4)


# ---------------------------------------------------------------------------- GRPO
def test_grpo_zero_gradient_exactly_outside_band_in_advantage_direction() -> None:
    # Sequence 0 (A > 0): ratios above the band (silenced), inside, below (not silenced).
    # Sequence 1 (A < 0): ratios below the band (silenced), inside, above (not silenced).
    ratios = [[1.3, 1.1, 0.6], [0.7, 0.9, 1.5]]
    adv = _t([1.5, -2.0])
    logp_new, logp_old, m = _inputs(ratios, [[1, 1, 1], [1, 1, 1]])
    out = grpo(logp_new, logp_old, adv, m, LossConfig(eps_low=0.2, eps_high=0.2))
    out.loss.backward()
    g = logp_new.grad
    assert g[0, 0].item() == 0.0 and g[1, 0].item() == 0.0
    for i, t in [(0, 1), (0, 2), (1, 1), (1, 2)]:
        r, a = ratios[i][t], float(adv[i])
        assert g[i, t].item() == pytest.approx(-_token_weight(m, i) * r * a, rel=1e-12)
    # Loss value: min(r A, clip(r) A) per token.
    expected = 0.0
    for i, row in enumerate(ratios):
        a = float(adv[i])
        for r in row:
            expected -= _token_weight(m, i) * min(r * a, min(max(r, 0.8), 1.2) * a)
    assert out.loss.item() == pytest.approx(expected, rel=1e-12)


def test_grpo_asymmetric_band() -> None:
    logp_new, logp_old, m = _inputs([[1.25], [1.25]], [[1], [1]])
    adv = _t([1.0, 1.0])
    grpo(logp_new, logp_old, adv, m, LossConfig(eps_low=0.2, eps_high=0.28)).loss.backward()
    assert torch.all(logp_new.grad != 0)  # 1.25 is inside [0.8, 1.28]
    logp_new.grad = None
    grpo(logp_new, logp_old, adv, m, LossConfig(eps_low=0.2, eps_high=0.2)).loss.backward()
    assert torch.all(logp_new.grad == 0)


# ---------------------------------------------------------------------------- GSPO
def test_gspo_sequence_ratio_is_geometric_mean_over_masked_tokens() -> None:
    ratios = [[1.0002, 0.9999, 1.0001, 55.0], [1.0, 1.0, 1.0, 1.0]]
    mask = [[1, 1, 1, 0], [1, 1, 1, 1]]
    adv = _t([1.0, 0.5])
    logp_new, logp_old, m = _inputs(ratios, mask)
    out = gspo(logp_new, logp_old, adv, m)
    out.loss.backward()
    s0 = (1.0002 * 0.9999 * 1.0001) ** (1 / 3)  # the padded 55.0 does not count
    assert 1 - 3e-4 < s0 < 1 + 4e-4
    expected = -0.5 * (s0 * 1.0 + 1.0 * 0.5)
    assert out.loss.item() == pytest.approx(expected, rel=1e-12)
    # Inside the band: d loss / d logp_{i,t} = -seq_weight * s_i * A_i / |y_i| for every masked token.
    for t in range(3):
        assert logp_new.grad[0, t].item() == pytest.approx(-0.5 * s0 * 1.0 / 3, rel=1e-12)
    assert logp_new.grad[0, 3].item() == 0.0
    assert torch.allclose(logp_new.grad[1], torch.full((4,), -0.5 * 0.5 / 4, dtype=torch.float64))
    # Per-token pieces sum back to the loss.
    assert (-(out.objective * out.weight).sum()).item() == pytest.approx(out.loss.item(), rel=1e-12)


def test_gspo_one_far_token_silences_the_whole_sequence() -> None:
    # Geometric mean of (1, 1, 1.01) is ~1.0033 > 1 + 4e-4: the positive-advantage sequence gets no gradient.
    logp_new, logp_old, m = _inputs([[1.0, 1.0, 1.01], [1.0, 1.0, 0.99]], [[1, 1, 1], [1, 1, 1]])
    adv = _t([1.0, -1.0])
    gspo(logp_new, logp_old, adv, m).loss.backward()
    assert torch.all(logp_new.grad == 0)
    # The other direction is not clipped: positive advantage with s < 1 keeps its gradient.
    logp_new2, logp_old2, m2 = _inputs([[1.0, 1.0, 0.99]], [[1, 1, 1]])
    gspo(logp_new2, logp_old2, _t([1.0]), m2).loss.backward()
    s = 0.99 ** (1 / 3)
    assert torch.allclose(logp_new2.grad, torch.full((1, 3), -s / 3, dtype=torch.float64), rtol=1e-12, atol=0)


# ---------------------------------------------------------------------------- PG
def test_pg_is_unclipped_importance_weighted_gradient() -> None:
    ratios = [[5.0, 0.1], [3.0, 1.0]]
    adv = _t([1.0, -2.0])
    logp_new, logp_old, m = _inputs(ratios, [[1, 1], [1, 0]])
    out = pg(logp_new, logp_old, adv, m)
    out.loss.backward()
    expected = -(0.5 * 0.5 * (5.0 + 0.1) * 1.0 + 0.5 * 1.0 * 3.0 * -2.0)
    assert out.loss.item() == pytest.approx(expected, rel=1e-12)
    assert logp_new.grad[0, 0].item() == pytest.approx(-0.25 * 5.0, rel=1e-12)
    assert logp_new.grad[1, 0].item() == pytest.approx(0.5 * 3.0 * 2.0, rel=1e-12)
    assert logp_new.grad[1, 1].item() == 0.0


# ---------------------------------------------------------------------------- masks, for every loss
@pytest.mark.parametrize("algo", ["sapo", "grpo", "gspo", "pg"])
def test_padding_never_counts(algo: str) -> None:
    """Garbage (even NaN / inf) log-probs on padding change neither the loss nor any gradient; a
    sequence with no masked token is left out of the mean."""
    loss_fn = get_loss(algo)
    adv = _t([1.2, -0.4, 0.9])
    ratios = [[1.0001, 0.9998, 1.0], [1.3, 0.7, 1.1], [1.0, 1.0, 1.0]]
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    logp_new, logp_old, _ = _inputs(ratios, mask.tolist())
    clean = loss_fn(logp_new, logp_old, adv, mask, LossConfig())
    clean.loss.backward()
    clean_grad = logp_new.grad.clone()

    dirty_new = logp_new.detach().clone()
    dirty_new[0, 2], dirty_new[2, 0], dirty_new[2, 1] = math.inf, math.nan, 40.0
    dirty_new.requires_grad_(True)
    dirty_old = logp_old.clone()
    dirty_old[2, 2] = -math.inf
    dirty = loss_fn(dirty_new, dirty_old, adv, mask, LossConfig())
    dirty.loss.backward()
    assert dirty.loss.item() == clean.loss.item()
    assert torch.equal(dirty_new.grad, clean_grad)
    assert torch.all(dirty_new.grad[mask == 0] == 0)
    assert torch.all(dirty.objective[mask == 0] == 0)

    # Dropping the empty third sequence altogether gives the same loss: it was not in the mean.
    alone = loss_fn(logp_new.detach()[:2], logp_old[:2], adv[:2], mask[:2], LossConfig())
    assert alone.loss.item() == pytest.approx(clean.loss.item(), rel=1e-12)
    assert out_weights_sum_to_one(dirty.weight)


def out_weights_sum_to_one(weight: torch.Tensor) -> bool:
    return math.isclose(weight.sum().item(), 1.0, rel_tol=1e-12)


def test_unknown_algorithm_is_named() -> None:
    with pytest.raises(ValueError, match="sapo"):
        get_loss("ppo")
