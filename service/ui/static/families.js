// The run page's charts: the stability families of the metric catalogue, a chart each.
export const FAMILIES = [
  { name: "reward", title: "Reward", metrics: ["reward.mean", "reward.std"] },
  { name: "entropy", title: "Entropy", metrics: ["entropy.mean"] },
  { name: "log_ratio_spread", title: "Log-ratio spread", metrics: ["log_ratio.std", "seq.log_ratio_dispersion", "log_ratio.mean"] },
  { name: "log_ratio_tails", title: "Log-ratio tails", metrics: ["log_ratio.p01", "log_ratio.p05", "log_ratio.p50", "log_ratio.p95", "log_ratio.p99", "log_ratio.abs_max"] },
  { name: "ratio", title: "Importance ratio", metrics: ["ratio.mean", "ratio.std", "ratio.min", "ratio.max"] },
  { name: "kl", title: "KL (k1, k3)", metrics: ["kl.k1", "kl.k3"] },
  { name: "gate_weight", title: "SAPO gate weight (all, A>0, A<0)", metrics: ["gate.weight_mean", "sign.pos.gate_weight_mean", "sign.neg.gate_weight_mean"] },
  { name: "gate_saturation", title: "SAPO gate saturation (all, A>0, A<0)", metrics: ["gate.saturated_frac", "sign.pos.saturated_frac", "sign.neg.saturated_frac"] },
  { name: "sign_split", title: "Sign split: ratio std and gradient share", metrics: ["sign.pos.ratio_std", "sign.neg.ratio_std", "sign.pos.grad_share", "sign.neg.grad_share"] },
  { name: "clipping", title: "Would-be clipping (GRPO token, GSPO sequence)", metrics: ["clip.token_frac", "clip.token_frac_high", "clip.token_frac_low", "clip.seq_frac"] },
  { name: "mismatch", title: "Training-inference mismatch", metrics: ["mismatch.kl_k3", "mismatch.abs_max", "mismatch.log_ratio_mean"] },
  { name: "moe", title: "MoE route flips", metrics: ["moe.route_flip_frac"] },
  { name: "grad_norm", title: "Gradient norm", metrics: ["grad_norm"] },
  { name: "loss", title: "Loss", metrics: ["loss"] },
  { name: "response_len", title: "Response length", metrics: ["response_len.mean", "response_len.max"] },
  { name: "nonfinite", title: "Non-finite tokens", metrics: ["nonfinite.token_count"] },
];
