"""Reward hacking: the reward climbs while the answers collapse.

The signature (a reward that pays something other than the task, e.g. brevity): the mean response
length falls far below its early level while the reward rises above its own, the token entropy falls
and the policy moves away from its rollouts (KL up). Each signal alone is ordinary: lengths drift,
entropy falls as a run converges, rewards rise when it learns. Together they say the policy found a
degenerate answer the reward pays for, and the task itself is being unlearned.

Baselines are each metric's mean over a warm-up window after ``skip`` early steps; the current values
are EWMAs (``alpha``), so a single short batch does not fire it. KL counts only when ``kl_factor`` is
set (KL is zero on a rollout's on-policy first step: those steps are left out of its EWMA).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..model import Param
from .base import Kind, StepFn, isfinite

__all__ = ["REWARD_HACK"]


def _compile_reward_hack(p: Mapping[str, Any]) -> StepFn:
    length_m, reward_m, entropy_m, kl_m = p["length_metric"], p["reward_metric"], p["entropy_metric"], p["kl_metric"]
    skip, warmup, alpha = p["skip"], p["warmup"], p["alpha"]
    length_frac, gain, entropy_frac, kl_factor = p["length_fraction"], p["reward_gain"], p["entropy_fraction"], p["kl_factor"]
    names = (length_m, reward_m, entropy_m)

    def step(st: dict, m: Mapping[str, float]) -> bool | None:
        xs = [m.get(name) for name in names]
        if any(x is None or not isfinite(x) for x in xs):
            return None
        kl = m.get(kl_m)
        use_kl = kl is not None and isfinite(kl) and kl > 0.0
        n = st.get("n", 0)
        st["n"] = n + 1
        if n < skip:
            return False
        e = st.get("e")
        if e is None:
            e = st["e"] = [float(x) for x in xs]  # type: ignore[arg-type]
            st["b"] = [0.0, 0.0, 0.0]
        else:
            for i, x in enumerate(xs):
                e[i] += alpha * (x - e[i])  # type: ignore[operator]
        if use_kl:
            st["kl"] = kl if "kl" not in st else st["kl"] + alpha * (kl - st["kl"])
        if n < skip + warmup:  # baselines: plain means over the warm-up window
            b = st["b"]
            for i, x in enumerate(xs):
                b[i] += x / warmup  # type: ignore[operator]
            if use_kl:
                st["kls"], st["kln"] = st.get("kls", 0.0) + kl, st.get("kln", 0) + 1  # type: ignore[operator]
            return False
        b = st["b"]
        st["ref"] = b[0]
        if not (e[0] <= length_frac * b[0] and e[1] >= b[1] + gain and e[2] <= entropy_frac * b[2]):
            return False
        if kl_factor is None:
            return True
        if "kl" not in st or not st.get("kln"):
            return False
        return bool(st["kl"] >= kl_factor * st["kls"] / st["kln"])

    return step


REWARD_HACK = Kind(
    "reward_hack",
    "Response length collapsed below a fraction of its early level while the reward rose above its own and the "
    "entropy fell (optionally: KL rose): the reward pays a degenerate answer.",
    (
        Param("length_metric", "str", "response_len.mean", "Mean response length."),
        Param("reward_metric", "str", "reward.mean", "Mean reward."),
        Param("entropy_metric", "str", "entropy.mean", "Mean token entropy."),
        Param("kl_metric", "str", "kl.k3", "KL to the rollout policy (used when kl_factor is set)."),
        Param("skip", "int", 2, "Early steps ignored before the warm-up.", minimum=0, maximum=10000),
        Param("warmup", "int", 15, "Steps averaged into the baselines.", minimum=1, maximum=10000),
        Param("alpha", "float", 0.2, "EWMA weight of the newest step.", minimum=1e-4, maximum=1.0),
        Param("length_fraction", "float", 0.6, "Length EWMA at most this fraction of its baseline.", minimum=0.0,
              maximum=1.0),
        Param("reward_gain", "float", 0.05, "Reward EWMA at least this much above its baseline.", minimum=0.0),
        Param("entropy_fraction", "float", 0.9, "Entropy EWMA at most this fraction of its baseline.", minimum=0.0,
              maximum=10.0),
        Param("kl_factor", "float", None, "Optional: KL EWMA at least this many times its baseline.", minimum=0.0),
    ),
    _compile_reward_hack,
    lambda p: (p["length_metric"], p["reward_metric"], p["entropy_metric"], p["kl_metric"]),
)
