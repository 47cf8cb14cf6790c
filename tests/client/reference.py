"""An independent float64 numpy implementation of the metric catalogue, written from issue 4's text.

Deliberately naive (boolean indexing, a Python loop over sequences, numpy's own quantile and std) so
that it shares no code or strategy with ``sapo_monitor.client.stats``.
"""

from __future__ import annotations

import numpy as np

INNER_EDGES = np.array([-2.0 + 0.1 * k for k in range(41)])


def _np(t):
    return None if t is None else np.asarray(t.detach().cpu().double().numpy() if hasattr(t, "detach") else t, dtype=np.float64)


def reference_stats(logp_new, logp_old, advantages, mask, cfg, *, entropy=None, rewards=None,
                    logp_rollout=None, experts_old=None, experts_new=None) -> dict:
    ln, lo, adv, msk = _np(logp_new), _np(logp_old), _np(advantages), _np(mask)
    B, T = ln.shape
    M = msk > 0
    with np.errstate(all="ignore"):
        lr = ln - lo
    fin = np.isfinite(lr)
    V = M & fin
    tok_adv = adv if adv.ndim == 2 else np.repeat(adv[:, None], T, axis=1)
    out: dict = {
        "tokens.count": float(M.sum()),
        "nonfinite.token_count": float((M & ~fin).sum()),
    }
    lens = M.sum(1)
    has = lens > 0
    out["sequences.count"] = float(has.sum())
    if has.any():
        out["response_len.mean"] = float(lens[has].mean())
        out["response_len.max"] = float(lens[has].max())

    x = lr[V]
    a = tok_adv[V]
    counts = [0] * 42
    for v in x:
        counts[int(np.searchsorted(INNER_EDGES, v, side="right"))] += 1
    out["hist.log_ratio"] = counts
    if x.size:
        r = np.exp(x)
        out["ratio.mean"] = r.mean()
        out["ratio.std"] = r.std()
        out["ratio.min"] = r.min()
        out["ratio.max"] = r.max()
        out["log_ratio.mean"] = x.mean()
        out["log_ratio.std"] = x.std()
        out["log_ratio.abs_max"] = np.abs(x).max()
        for name, q in (("p01", 0.01), ("p05", 0.05), ("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
            out[f"log_ratio.{name}"] = float(np.quantile(x, q))
        out["kl.k1"] = np.mean(-x)
        out["kl.k3"] = np.mean(r - 1 - x)
        pos, neg, zero = a > 0, a < 0, a == 0
        high = pos & (r > 1 + cfg.eps_high)
        low = neg & (r < 1 - cfg.eps_low)
        out["clip.token_frac_high"] = high.mean()
        out["clip.token_frac_low"] = low.mean()
        out["clip.token_frac"] = high.mean() + low.mean()
        out["sign.pos.token_frac"] = pos.mean()
        out["sign.neg.token_frac"] = neg.mean()
        out["sign.zero.token_frac"] = zero.mean()
        tau = np.where(pos, cfg.tau_pos, cfg.tau_neg)
        with np.errstate(over="ignore"):
            p = 1.0 / (1.0 + np.exp(-tau * (r - 1.0)))
        w = 4 * p * (1 - p)
        f = 4 * p / tau
        nz = pos | neg
        if nz.any():
            out["gate.weight_mean"] = w[nz].mean()
            out["gate.value_mean"] = f[nz].mean()
            out["gate.saturated_frac"] = (w[nz] < cfg.saturation_threshold).mean()
        mass = {}
        for sign, sel, clip in (("pos", pos, r > 1 + cfg.eps_high), ("neg", neg, r < 1 - cfg.eps_low)):
            mass[sign] = (w[sel] * np.abs(a[sel])).sum()
            if sel.any():
                out[f"sign.{sign}.ratio_mean"] = r[sel].mean()
                out[f"sign.{sign}.ratio_std"] = r[sel].std()
                out[f"sign.{sign}.log_ratio_mean"] = x[sel].mean()
                out[f"sign.{sign}.gate_weight_mean"] = w[sel].mean()
                out[f"sign.{sign}.saturated_frac"] = (w[sel] < cfg.saturation_threshold).mean()
                out[f"sign.{sign}.clip_frac"] = clip[sel].mean()
        total = mass["pos"] + mass["neg"]
        if total > 0:
            out["sign.pos.grad_share"] = mass["pos"] / total
            out["sign.neg.grad_share"] = mass["neg"] / total
        if entropy is not None:
            out["entropy.mean"] = _np(entropy)[V].mean()
        if logp_rollout is not None:
            d = lo[V] - _np(logp_rollout)[V]
            out["mismatch.log_ratio_mean"] = d.mean()
            out["mismatch.kl_k3"] = np.mean(np.exp(d) - 1 - d)
            out["mismatch.abs_max"] = np.abs(d).max()
        if experts_old is not None:
            eo = experts_old.cpu().numpy()
            en = experts_new.cpu().numpy()
            if eo.ndim == 3:
                eo, en = eo[None], en[None]
            flips = 0
            pairs = 0
            for layer in range(eo.shape[0]):
                for b in range(B):
                    for t in range(T):
                        if V[b, t]:
                            pairs += 1
                            flips += set(eo[layer, b, t].tolist()) != set(en[layer, b, t].tolist())
            out["moe.route_flip_frac"] = flips / pairs

    seq_r, disp, seq_clip = [], [], []
    zero_signal = []
    for i in range(B):
        a_i = adv[i] if adv.ndim == 1 else tok_adv[i][M[i]].mean() if M[i].any() else 0.0
        if M[i].any():
            zero_signal.append(abs(a_i) < 1e-8)
        xs = lr[i][V[i]]
        if xs.size:
            s = np.exp(xs.mean())
            seq_r.append(s)
            disp.append(xs.std())
            seq_clip.append((a_i > 0 and s > 1 + cfg.seq_eps_high) or (a_i < 0 and s < 1 - cfg.seq_eps_low))
    if zero_signal:
        out["groups.zero_signal_frac"] = float(np.mean(zero_signal))
    if seq_r:
        s = np.array(seq_r)
        out["seq_ratio.mean"] = s.mean()
        out["seq_ratio.std"] = s.std()
        out["seq_ratio.min"] = s.min()
        out["seq_ratio.max"] = s.max()
        out["clip.seq_frac"] = float(np.mean(seq_clip))
        out["seq.log_ratio_dispersion"] = float(np.mean(disp))
    if rewards is not None:
        rw = _np(rewards).reshape(-1)
        if rw.size:
            out["reward.mean"] = rw.mean()
            out["reward.std"] = rw.std()
    return {k: (v if isinstance(v, list) else float(v)) for k, v in out.items()}
