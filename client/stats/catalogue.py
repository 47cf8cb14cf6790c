"""The one place that maps the summed statistics to catalogue names (issue 4's catalogue).

``named_sums`` reads the host copy of a step's summary (flat lists under the accumulator's part names)
into named sufficient statistics; ``assemble`` turns those into the catalogue's values. Statistics over
an empty set are left out, never NaN.
"""

from __future__ import annotations

import math

from sapo_monitor.client.stats.features import GROUPS, SEQ, TOK

__all__ = ["assemble", "named_sums"]


def _moments(h: dict[str, float], name: str, n: float, shifted_sum: float, shifted_sq: float, pivot: float) -> None:
    """(count, mean, M2) from sums of (x - pivot) and (x - pivot)^2."""
    safe = max(n, 1.0)
    h[f"{name}.n"] = n
    h[f"{name}.mean"] = pivot + shifted_sum / safe
    h[f"{name}.m2"] = max(shifted_sq - shifted_sum * shifted_sum / safe, 0.0)


def named_sums(host: dict[str, list[float]]) -> dict[str, float]:
    """The host copy of the summed feature matrices, under the names ``assemble`` reads."""
    lr_p, r_p, rw_p = host["pivots"]
    tok_sums, n_groups = host["sum.tok"], len(GROUPS)  # row-major [len(TOK), len(GROUPS)]
    tok = {g: {f: tok_sums[i * n_groups + j] for i, f in enumerate(TOK)} for j, g in enumerate(GROUPS)}
    for sums in tok.values():  # the gate's factor 4, left out on the device (exact in binary)
        sums["w"] *= 4.0
        sums["f"] *= 4.0
    seq = {g: dict(zip(SEQ, host["sum.seq"][i * len(SEQ) : (i + 1) * len(SEQ)], strict=True))
           for i, g in enumerate(("ok", "has"))}
    t, pos, neg = tok["all"], tok["pos"], tok["neg"]
    len_max, seq_max, seq_negmin = host["max.seq"]
    h: dict[str, float] = {
        "n_mask": seq["has"]["len"],
        "n_nonfinite": seq["has"]["nonfinite"],
        "n_seq": seq["has"]["n"],
        "len_max": len_max,
        "zero_signal": seq["has"]["zero_signal"],
        "n_valid": t["n"],
        "lr_negmin": -host["lr_range"][0],
        "lr_max": host["lr_range"][1],
        "k3_sum": t["k3"],
        "clip_high": pos["hi"],
        "clip_low": neg["lo"],
        "n_pos": pos["n"],
        "n_neg": neg["n"],
        "n_zero": tok["zero"]["n"],
        "n_nonzero": pos["n"] + neg["n"],
        "w_sum": pos["w"] + neg["w"],
        "f_sum": pos["f"] + neg["f"],
        "sat": pos["sat"] + neg["sat"],
        "seq_lr_max": seq_max,
        "seq_lr_negmin": seq_negmin,
        "seq_clip": seq["ok"]["clip"],
        "disp_sum": seq["ok"]["std"],
    }
    _moments(h, "lr", t["n"], t["d_lr"], t["d_lr2"], lr_p)
    _moments(h, "ratio", t["n"], t["d_r"], t["d_r2"], r_p)
    _moments(h, "seq_ratio", seq["ok"]["n"], seq["ok"]["d_s"], seq["ok"]["d_s2"], 0.0)
    for sign, g, clip in (("pos", pos, "hi"), ("neg", neg, "lo")):
        _moments(h, f"ratio_{sign}", g["n"], g["d_r"], g["d_r2"], r_p)
        h[f"lr_sum_{sign}"] = g["d_lr"] + lr_p * g["n"]
        h[f"w_sum_{sign}"] = g["w"]
        h[f"sat_{sign}"] = g["sat"]
        h[f"clip_{sign}"] = g[clip]
        h[f"gm_{sign}"] = tok[f"abs_{sign}"]["w"]
    if "sum.entropy" in host:
        h["ent_sum"], h["ent_n"] = host["sum.entropy"]
    if "sum.reward" in host:
        rw_n, rw_sum, rw_sq = host["sum.reward"]
        _moments(h, "reward", rw_n, rw_sum, rw_sq, rw_p)
    if "sum.mismatch" in host:
        h["mm_sum"], h["mm_k3_sum"], h["mm_n"] = host["sum.mismatch"]
        h["mm_abs_max"] = host["max.mismatch"][0]
    if "sum.moe" in host:
        h["flip_sum"], h["flip_n"] = host["sum.moe"]
    return h


def _std(h: dict[str, float], name: str) -> float:
    n = h[f"{name}.n"]
    return math.sqrt(max(h[f"{name}.m2"], 0.0) / n)


def assemble(h: dict[str, float], quantiles: dict[str, float]) -> dict[str, float | list[int]]:
    """Catalogue names from the host copy of the sufficient statistics; empty sets stay absent."""
    out: dict[str, float | list[int]] = {
        "tokens.count": h["n_mask"],
        "sequences.count": h["n_seq"],
        "nonfinite.token_count": h["n_nonfinite"],
    }
    n_seq = h["n_seq"]
    if n_seq > 0:
        out["response_len.mean"] = h["n_mask"] / n_seq
        out["response_len.max"] = h["len_max"]
        out["groups.zero_signal_frac"] = h["zero_signal"] / n_seq
    n = h["n_valid"]
    if n > 0:
        out["ratio.mean"] = 1.0 + h["ratio.mean"]
        out["ratio.std"] = _std(h, "ratio")
        out["ratio.min"] = math.exp(-h["lr_negmin"])
        out["ratio.max"] = math.exp(h["lr_max"])
        out["log_ratio.mean"] = h["lr.mean"]
        out["log_ratio.std"] = _std(h, "lr")
        out["log_ratio.abs_max"] = max(h["lr_max"], h["lr_negmin"])
        out.update(quantiles)
        out["kl.k1"] = -h["lr.mean"]
        out["kl.k3"] = h["k3_sum"] / n
        out["clip.token_frac_high"] = h["clip_high"] / n
        out["clip.token_frac_low"] = h["clip_low"] / n
        out["clip.token_frac"] = (h["clip_high"] + h["clip_low"]) / n
        for sign in ("pos", "neg", "zero"):
            out[f"sign.{sign}.token_frac"] = h[f"n_{sign}"] / n
    n_nonzero = h["n_nonzero"]
    if n_nonzero > 0:
        out["gate.weight_mean"] = h["w_sum"] / n_nonzero
        out["gate.value_mean"] = h["f_sum"] / n_nonzero
        out["gate.saturated_frac"] = h["sat"] / n_nonzero
    for sign in ("pos", "neg"):
        n_s = h[f"n_{sign}"]
        if n_s > 0:
            out[f"sign.{sign}.ratio_mean"] = 1.0 + h[f"ratio_{sign}.mean"]
            out[f"sign.{sign}.ratio_std"] = _std(h, f"ratio_{sign}")
            out[f"sign.{sign}.log_ratio_mean"] = h[f"lr_sum_{sign}"] / n_s
            out[f"sign.{sign}.gate_weight_mean"] = h[f"w_sum_{sign}"] / n_s
            out[f"sign.{sign}.saturated_frac"] = h[f"sat_{sign}"] / n_s
            out[f"sign.{sign}.clip_frac"] = h[f"clip_{sign}"] / n_s
    grad_mass = h["gm_pos"] + h["gm_neg"]
    if grad_mass > 0:
        out["sign.pos.grad_share"] = h["gm_pos"] / grad_mass
        out["sign.neg.grad_share"] = h["gm_neg"] / grad_mass
    n_seq_valid = h["seq_ratio.n"]
    if n_seq_valid > 0:
        out["seq_ratio.mean"] = 1.0 + h["seq_ratio.mean"]
        out["seq_ratio.std"] = _std(h, "seq_ratio")
        out["seq_ratio.min"] = math.exp(-h["seq_lr_negmin"])
        out["seq_ratio.max"] = math.exp(h["seq_lr_max"])
        out["clip.seq_frac"] = h["seq_clip"] / n_seq_valid
        out["seq.log_ratio_dispersion"] = h["disp_sum"] / n_seq_valid
    if h.get("ent_n", 0) > 0:
        out["entropy.mean"] = h["ent_sum"] / h["ent_n"]
    if h.get("reward.n", 0) > 0:
        out["reward.mean"] = h["reward.mean"]
        out["reward.std"] = _std(h, "reward")
    if h.get("mm_n", 0) > 0:
        out["mismatch.log_ratio_mean"] = h["mm_sum"] / h["mm_n"]
        out["mismatch.kl_k3"] = h["mm_k3_sum"] / h["mm_n"]
        out["mismatch.abs_max"] = h["mm_abs_max"]
    if h.get("flip_n", 0) > 0:
        out["moe.route_flip_frac"] = h["flip_sum"] / h["flip_n"]
    return out


