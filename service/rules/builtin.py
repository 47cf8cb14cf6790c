"""The built-in rule pack: on by default for every run, tunable through ``PUT /api/v1/rules/{id}``.

Each description says what the rule means for a SAPO / GRPO / GSPO run and what to check first.
Defaults are chosen so a healthy run (the bundled trainer's default preset) stays quiet.
"""

from __future__ import annotations

from typing import Any

from .detectors import KINDS, validate_params
from .model import Rule

__all__ = ["BUILTIN_IDS", "BUILTIN_RULES", "builtin_rule"]


def _rule(
    rule_id: str, kind: str, severity: str, for_steps: int, description: str, *, clear_steps: int = 5, **params: Any
) -> Rule:
    return Rule(
        clear_steps=clear_steps,
        id=rule_id,
        kind=kind,
        severity=severity,
        params=validate_params(KINDS[kind], params),
        for_steps=for_steps,
        description=" ".join(description.split()),
        builtin=True,
    )


BUILTIN_RULES: tuple[Rule, ...] = (
    _rule(
        "nonfinite", "nonfinite", "critical", 1,
        """The loss, the gradient norm or some token log-ratios are NaN or infinite: the update is
        garbage and the weights may already be poisoned. Check for log-prob underflow (-inf logp_old on
        masked tokens), an exploding learning rate, fp16 overflow, and resume from the last finite step.""",
    ),
    _rule(
        "ratio_variance_spike", "median_spike", "warning", 2,
        """The spread of token log-ratios (log_ratio.std) jumped far above its own recent level: the policy
        moved much further from the rollout policy than usual in one step. It often comes before a
        collapse, especially in MoE models. Check the learning rate, the number of mini-batch updates per
        rollout, routing changes (moe.route_flip_frac) and training-inference mismatch.""",
        metrics=["log_ratio.std"], factor=3.0, window=20, warmup=10, min_value=0.02,
    ),
    _rule(
        "ratio_tail_blowup", "tails", "warning", 3,
        """Some tokens' importance ratios are extreme (|log r| above the bound, or the 1st/99th percentile
        of log r beyond +/-tail) for several steps. SAPO's gate down-weights such tokens, but many of
        them mean the old and new policies disagree badly. Check long responses, rare tokens, and the
        mismatch between the rollout engine and the trainer.""",
        abs_max=4.0, tail=1.0,
    ),
    _rule(
        "gate_saturation", "threshold", "warning", 3,
        """A large share of tokens have a SAPO gradient weight near zero (gate.saturated_frac above the
        bound for several steps): the soft gate is switching off the learning signal. Check whether the
        ratios drifted (log_ratio.std), whether tau is too large, and whether the negative side
        (sign.neg.saturated_frac) dominates.""",
        metric="gate.saturated_frac", op=">", value=0.3,
    ),
    _rule(
        "negative_token_instability", "sign_spread", "warning", 3,
        """Negative-advantage tokens' ratios spread much wider than positive ones': the paper's failure
        mode, where pushing down sampled tokens raises many unsampled logits at once. Check tau_neg (SAPO
        recommends tau_neg > tau_pos), the share of gradient mass from the negative side and the entropy.""",
        factor=2.0, min_std=0.05,
    ),
    _rule(
        "clip_burst", "median_spike", "warning", 2,
        """The share of tokens GRPO's clip would silence (clip.token_frac) or of sequences GSPO's clip would
        silence (clip.seq_frac) jumped above its recent level. Clipping bursts are reported to precede
        collapse in MoE runs. Check the ratio spread and the learning rate.""",
        metrics=["clip.token_frac", "clip.seq_frac"], factor=3.0, window=20, warmup=10, min_value=0.1,
    ),
    _rule(
        "entropy_collapse", "below_baseline", "critical", 3,
        """Mean token entropy fell below a fraction of its early-run level while the reward did not
        improve: the policy became nearly deterministic without getting better and stops exploring.
        (Entropy falling while the reward climbs is convergence and does not fire.) Check the learning
        rate, negative-side instability and whether the reward is being hacked by a degenerate answer.""",
        metric="entropy.mean", baseline_steps=10, fraction=0.3, guard_metric="reward.mean", guard_gain=0.02,
        guard_window=20,
    ),
    _rule(
        "reward_collapse", "drop_from_best", "critical", 5,
        """The smoothed mean reward fell a set fraction below the best it reached: the run is unlearning.
        Look at the steps just before (ratio spread, gate saturation, entropy, gradient norm) for the
        cause, and consider resuming from a checkpoint near the best.""",
        metric="reward.mean", alpha=0.2, drop=0.4, warmup=10, min_scale=0.05,
    ),
    _rule(
        "grad_norm_spike", "median_spike", "warning", 1,
        """The gradient norm is many times its running median: one step pushed the weights hard. Isolated
        spikes are often harmless with gradient clipping; repeated ones come before divergence. Check the
        ratio tails and whether gradient clipping is on.""",
        metrics=["grad_norm"], factor=5.0, window=20, warmup=10, min_value=0.0,
    ),
    _rule(
        "kl_blowup", "threshold", "warning", 3,
        """The k3 estimate of KL(pi_old || pi_theta) is above the bound: the policy left the trust region of
        its rollouts. A precursor, not a collapse by itself: off-policy runs that go on learning reach it
        routinely (critical means learning stopped or reversed: entropy_collapse, reward_collapse,
        nonfinite). Check the learning rate and the number of updates per rollout.""",
        metric="kl.k3", op=">", value=1.0,
    ),
    _rule(
        "mismatch_kl", "threshold", "warning", 3,
        """The training-inference mismatch (k3 KL between the trainer's and the rollout engine's log-probs)
        is above the bound: the ratios the loss sees include noise from the inference engine. Check
        precision settings (bf16 vs fp32 logits), the engine version and MoE routing differences.""",
        metric="mismatch.kl_k3", op=">", value=0.02,
    ),
    _rule(
        "moe_route_flip", "threshold", "warning", 3,
        """Many (layer, token) pairs chose different experts under the current policy than under the
        rollout policy: token ratios become noisy in ways the ratio cannot see. Check router learning
        rate, load balancing and routing replay.""",
        metric="moe.route_flip_frac", op=">", value=0.2,
    ),
    _rule(
        "stalled", "threshold", "warning", 10,
        """Almost every group has identical rewards (groups.zero_signal_frac above the bound): advantages
        are zero and nothing is learned. The task is too easy or too hard for the current policy;
        check the reward function, the group size and the data mix.""",
        metric="groups.zero_signal_frac", op=">", value=0.9,
    ),
    _rule(
        "silent_run", "silence", "warning", 1,
        """No step arrived for a while although the run is marked running: the trainer may have crashed,
        hung or lost its connection. Check the trainer's logs and the client's spool directory.""",
        after_s=600.0, clear_steps=1,
    ),
)

BUILTIN_IDS = frozenset(r.id for r in BUILTIN_RULES)
_BY_ID = {r.id: r for r in BUILTIN_RULES}


def builtin_rule(rule_id: str) -> Rule | None:
    """The built-in rule with this id (defaults, before any stored override), or None."""
    return _BY_ID.get(rule_id)
