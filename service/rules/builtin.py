"""The built-in rule pack: on by default for every run, tunable through ``PUT /api/v1/rules/{id}``.

Each description says what the rule means for a SAPO / GRPO / GSPO run and what to check first.
Defaults are tuned on the labelled corpus of bench/detection.py (healthy runs of every preset stay
quiet at critical; see the severity contract below).
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


# Severity contract: ``critical`` = the run is collapsing (learning stopped or reversed, or the update is
# non-finite), always read from an outcome signal (reward, entropy, response length, finiteness);
# ``warning`` = a precursor worth a look. Precursors are measured against each run's own baseline (the
# ``shift`` / ``sign_shift`` / ``trend`` kinds: warm-up median and MAD on a log scale, then a CUSUM), so
# a level that is routine for one preset or loss (KL or mismatch under an off-policy preset, GSPO's
# clip rate) is not an alert by itself. Tuned on bench/detection.py's corpus (README: the table).
BUILTIN_RULES: tuple[Rule, ...] = (
    _rule(
        "nonfinite", "nonfinite", "critical", 1,
        """The loss, the gradient norm or some token log-ratios are NaN or infinite: the update is
        garbage and the weights may already be poisoned. Check for log-prob underflow (-inf logp_old on
        masked tokens), an exploding learning rate, fp16 overflow, and resume from the last finite step.""",
    ),
    _rule(
        "ratio_variance_spike", "shift", "warning", 2,
        """The spread of token log-ratios (log_ratio.std) rose well above this run's own baseline (CUSUM on
        a log scale): the policy moves further from the rollout policy than it used to. It often comes
        before a collapse, especially in MoE models. Check the learning rate, the number of mini-batch
        updates per rollout, routing changes (moe.route_flip_frac) and training-inference mismatch.""",
        metric="log_ratio.std", skip_zero=True, h=8.0,
    ),
    _rule(
        "ratio_tail_blowup", "shift", "warning", 3,
        """The largest token |log-ratio| (log_ratio.abs_max) rose well above this run's own level for
        several steps: some tokens' old and new probabilities now disagree far more than before. SAPO's gate
        down-weights such tokens, but many of them mean the policies disagree badly. Check long responses,
        rare tokens, and the mismatch between the rollout engine and the trainer.""",
        metric="log_ratio.abs_max", skip_zero=True, h=10.0,
    ),
    _rule(
        "gate_saturation", "shift", "warning", 3,
        """The share of tokens whose SAPO gradient weight is near zero (gate.saturated_frac) rose from this
        run's own baseline: the soft gate is switching off more of the learning signal than it did. Check
        whether the ratios drifted (log_ratio.std), whether tau is too large, and whether the negative side
        (sign.neg.saturated_frac) dominates.""",
        metric="gate.saturated_frac", floor=0.01, min_value=0.02, h=8.0,
    ),
    _rule(
        "negative_token_instability", "sign_shift", "warning", 3,
        """Negative-advantage tokens' ratio spread grew relative to the positive ones' (log of their ratio
        std ratio, against this run's own baseline): the paper's failure mode, where pushing down sampled
        tokens raises many unsampled logits at once. Check tau_neg (SAPO recommends tau_neg > tau_pos), the
        share of gradient mass from the negative side and the entropy.""",
        min_std=0.02, h=8.0,
    ),
    _rule(
        "clip_burst", "shift", "warning", 2,
        """The share of tokens GRPO's clip would silence (clip.token_frac) rose well above this run's own
        level. Clipping bursts are reported to precede collapse in MoE runs. Relative to the run, so GSPO
        (which clips ~100x more than GRPO) and GRPO share one rule. Check the ratio spread and the learning
        rate.""",
        metric="clip.token_frac", skip_zero=True, floor=1e-3, h=8.0,
    ),
    _rule(
        "entropy_collapse", "below_baseline", "critical", 3,
        """Mean token entropy fell below a fraction of its early-run level while the reward did not
        improve over the same recent window: the policy became nearly deterministic without getting
        better and stops exploring. (Entropy falling while the reward climbs is convergence and does not
        fire, unless most groups' rewards are all equal: those groups give no gradient, so nothing
        converges.) Check the learning rate, negative-side instability and whether the reward is being hacked
        by a degenerate answer.""",
        metric="entropy.mean", baseline_steps=10, fraction=0.3, guard_metric="reward.mean", guard_gain=0.02,
        guard_window=20, stall_metric="groups.zero_signal_frac", stall_value=0.6,
    ),
    _rule(
        "reward_collapse", "drop_from_best", "critical", 5,
        """The smoothed mean reward fell well below the best it reached after warm-up (30% of the best, at
        least 0.06): learning reversed. Look at the steps just before (ratio spread, gate saturation,
        entropy, gradient norm) for the cause, and consider resuming from a checkpoint near the best.""",
        metric="reward.mean", alpha=0.15, drop=0.3, warmup=15, min_scale=0.2,
    ),
    _rule(
        "reward_decline", "drop_from_best", "warning", 5,
        """The smoothed mean reward is falling from the best it reached after warm-up (20% of the best, at
        least 0.04): not yet a collapse (reward_collapse is the critical), but learning has stopped
        improving and may be reversing. Check what changed just before: ratio spread, KL, learning rate.""",
        metric="reward.mean", alpha=0.15, drop=0.2, warmup=15, min_scale=0.2,
    ),
    _rule(
        "response_length_drop", "shift", "warning", 3,
        """The mean response length fell well below this run's own level: answers are getting shorter than
        they used to. With a rising reward and falling entropy this is how a reward hack starts (the
        critical reward_hack confirms it); on its own it may be the task. Check a sample of responses.""",
        metric="response_len.mean", direction="down", h=8.0,
    ),
    _rule(
        "reward_hack", "reward_hack", "critical", 3,
        """The reward climbs while the answers collapse: mean response length fell below 75% of its early
        level, the reward rose above its own early level and the entropy fell. The reward pays a
        degenerate answer (too short, a fixed string) and the task itself is being unlearned. Check the
        reward function (length terms, format bonuses) and sample some responses.""",
        length_fraction=0.75, entropy_fraction=0.95, reward_gain=0.05,
    ),
    _rule(
        "grad_norm_spike", "shift", "warning", 2,
        """The gradient norm rose well above this run's own level for several steps: the updates push the
        weights much harder than before. Isolated spikes are often harmless with gradient clipping;
        sustained ones come before divergence. Check the ratio tails and whether gradient clipping is on.""",
        metric="grad_norm", h=12.0,
    ),
    _rule(
        "kl_blowup", "shift", "warning", 3,
        """The k3 estimate of KL(pi_old || pi_theta) rose well above this run's own level: the policy leaves
        the trust region of its rollouts further than it used to. A precursor, not a collapse by itself:
        off-policy runs that go on learning sit at high KL routinely, which is why the rule is relative to
        the run. Check the learning rate and the number of updates per rollout.""",
        metric="kl.k3", skip_zero=True, h=8.0,
    ),
    _rule(
        "mismatch_trend", "trend", "warning", 3,
        """The training-inference mismatch (k3 KL between the trainer's and the rollout engine's log-probs)
        rose steadily over the last 20 steps (about 4.5x, consistently; from exactly zero counts): the ratios the loss sees
        include more and more noise from the inference engine, the documented pattern before a crash (verl
        reads rollout_probs_diff_mean > 0.01 as an inference-precision problem). Check precision settings
        (bf16 vs fp32 logits), the engine version and MoE routing differences.""",
        metric="mismatch.kl_k3", window=20, rise=1.5, min_tau=0.5, floor=1e-8, min_value=0.0,
    ),
    _rule(
        "mismatch_shift", "shift", "warning", 2,
        """The training-inference mismatch (mismatch.kl_k3) jumped well above this run's own level, e.g. from
        none at all: the rollout engine now samples from a different distribution than the trainer scores
        (a precision change such as bf16 rollouts, a new engine version, different MoE routing). Check
        precision settings and the engine; a steady rise afterwards is mismatch_trend's case.""",
        metric="mismatch.kl_k3", floor=1e-8, h=20.0,
    ),
    _rule(
        "moe_route_flip", "shift", "warning", 3,
        """The share of (layer, token) pairs that chose different experts under the current policy than
        under the rollout policy rose above this run's own level: token ratios become noisy in ways the
        ratio cannot see. Check router learning rate, load balancing and routing replay.""",
        metric="moe.route_flip_frac", skip_zero=True, floor=1e-3, h=8.0,
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
