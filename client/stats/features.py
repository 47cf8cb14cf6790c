"""The per-token and per-sequence features the accumulator sums, and the batched sums over groups.

Every feature is 0 at excluded positions, so a sum over a group is a sum over its finite masked tokens.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from sapo_monitor.client.stats.config import StatsConfig

__all__ = ["GROUPS", "SEQ", "TOK", "on_device", "per_step", "sign_groups", "token_features"]

# Per-token features (rows of the summed matrices) and the token groups they are summed over (columns).
TOK = ("n", "d_lr", "d_lr2", "d_r", "d_r2", "k3", "w", "f", "sat", "hi", "lo")
GROUPS = ("all", "pos", "neg", "zero", "abs_pos", "abs_neg")  # abs_*: weighted by |A| (gradient mass)
SEQ = ("n", "d_s", "d_s2", "clip", "std", "zero_signal", "len", "nonfinite")


def sign_groups(adv: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """[len(GROUPS), *adv.shape]: each sequence's (or token's) weight in each group."""
    import torch

    signs = torch.stack([torch.ones_like(pos), pos, neg, adv == 0]).to(adv.dtype)
    # |A| on the signed rows; a NaN advantage is in no signed group and must not leak into the sums.
    weights = torch.where(signs[1:3] > 0, adv.abs(), 0.0)
    return torch.cat([signs, weights])


def token_features(x: torch.Tensor, vf: torch.Tensor, tau: torch.Tensor, lr_pivot: torch.Tensor,
                    r_pivot: torch.Tensor, cfg: StatsConfig, feat: torch.Tensor) -> None:
    """Write the ``TOK`` features of the log-ratios ``x`` (0 where excluded; ``vf`` 1.0 where kept) into
    ``feat`` [len(TOK), *x.shape], in place: every temporary is reused, nothing is stacked. The gate's
    factor 4 is left to the host (multiplying by 4 is exact): ``w`` holds p(1 - p), ``f`` holds p / tau."""
    import torch

    f_n, f_dlr, f_dlr2, f_dr, f_dr2, f_k3, f_w, f_f, f_sat, f_hi, f_lo = feat.unbind(0)
    f_n.copy_(vf)
    torch.sub(x, lr_pivot, out=f_dlr).mul_(vf)
    torch.mul(f_dlr, f_dlr, out=f_dlr2)
    r = x.exp()
    # At an excluded position x = 0, so r = 1 and w = 1: no flag is raised there (StatsConfig's bounds).
    torch.gt(r, 1.0 + cfg.eps_high, out=f_hi)
    torch.lt(r, 1.0 - cfg.eps_low, out=f_lo)
    rm1 = r.sub_(1.0)
    torch.sub(rm1, r_pivot, out=f_dr).mul_(vf)
    torch.mul(f_dr, f_dr, out=f_dr2)
    torch.sub(rm1, x, out=f_k3)
    p = rm1.mul_(tau).sigmoid_()  # SAPO's gate p = sigmoid(tau (r - 1))
    torch.div(p, tau, out=f_f).mul_(vf)
    torch.mul(p, torch.rsub(p, 1.0), out=f_w)
    torch.lt(f_w, cfg.saturation_threshold / 4.0, out=f_sat)  # w = 4p(1 - p) < threshold
    f_w.mul_(vf)



def per_step(a: torch.Tensor, b: torch.Tensor, steps: int) -> torch.Tensor:
    """[K, p, q]: for each step, the sum over its rows (and positions) of a[p] * b[q]. ``a`` [p, rows, ...]
    and ``b`` [q, rows, ...] hold the K steps' rows one step after the other."""
    import torch

    p, q = a.shape[0], b.shape[0]
    if steps == 1:
        return (a.reshape(p, -1) @ b.reshape(q, -1).T).unsqueeze(0)
    return torch.matmul(a.reshape(p, steps, -1).transpose(0, 1), b.reshape(q, steps, -1).permute(1, 2, 0))



def on_device(t: torch.Tensor, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``t.to(device, dtype)`` without the call when nothing changes (many tiny calls per step)."""
    if t.device == device and (dtype is None or t.dtype == dtype):
        return t
    return t.to(device=device, dtype=dtype)


