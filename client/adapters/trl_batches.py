"""The TRL adapter's per-micro-batch mapping: TRL's ``inputs`` and captured log-probs -> ``Monitor.observe``."""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any

from sapo_monitor.client.adapters import trl_compat

__all__ = ["NEEDS_LOGPS", "REWARD_KEY", "TRLLogpsMissingWarning", "TRLMicroBatches", "to_host"]

logger = logging.getLogger("sapo_monitor.client.trl")

# The extra generation-batch key that carries per-sequence rewards to compute_loss.
REWARD_KEY = "_sapo_monitor_rewards"

# Everything the monitor cannot compute without the current policy's per-token log-probs.
NEEDS_LOGPS = (
    "ratio.*, log_ratio.*, kl.*, clip.*, seq_ratio.*, gate.*, sign.*, entropy.mean, mismatch.*, "
    "hist.log_ratio and token counts"
)


class TRLLogpsMissingWarning(UserWarning):
    """TRL's loss ran without materialising per-token log-probs (Liger fused loss or a custom loss)."""


class TRLMicroBatches:
    """What one micro-batch gives the monitor (the part of ``TRLAdapter`` that reads TRL's tensors)."""

    trainer: Any
    monitor: Any
    on_policy: bool
    micro_batches_seen: int
    _fallback_rewards: list[float]
    _warned: set[str]
    _disabled_reason: str | None

    def _local_rewards(self, rewards_per_func: Any, n_local: int) -> Any:
        """This process's rows of TRL's weighted reward (NaN where every reward function returned None)."""
        import torch

        t = self.trainer
        rpf = rewards_per_func.float().cpu()  # rewards are few; one small copy per generation
        weights = getattr(t, "reward_weights", None)
        weights = torch.ones(rpf.shape[1]) if weights is None else weights.detach().float().cpu()
        rewards = (rpf * weights.unsqueeze(0)).nansum(dim=1)
        rewards[torch.isnan(rpf).all(dim=1)] = torch.nan
        rank = int(getattr(getattr(t, "accelerator", None), "process_index", 0))
        local = rewards[rank * n_local : (rank + 1) * n_local]
        return local if local.shape[0] == n_local else None

    def _observe(self, inputs: dict[str, Any], captured: tuple[Any, Any] | None, rewards: Any) -> None:
        import torch

        self.micro_batches_seen += 1
        try:
            missing = [k for k in trl_compat.REQUIRED_INPUT_KEYS if k not in inputs]
            if missing:
                self._disable(f"TRL's micro-batch no longer has {missing}; the adapter stops observing")
                return
            if captured is None:
                self._warn_once(
                    "logps",
                    "sapo-monitor: TRL's compute_loss did not compute per-token log-probs through "
                    "_get_per_token_logps_and_entropies (use_liger_kernel's fused loss or a custom loss): "
                    f"{NEEDS_LOGPS} are missing from this run; loss, grad_norm, lr and reward are still sent.",
                    TRLLogpsMissingWarning,
                )
                if rewards is not None:
                    self._fallback_rewards += [r for r in rewards.tolist() if math.isfinite(r)]
                return
            logp_new, entropy = captured
            mask = inputs["completion_mask"]
            if inputs.get("tool_mask") is not None:
                mask = mask * inputs["tool_mask"]
            # Without old log-probs TRL sets old := new, so the ratio is exactly 1 (see the on-policy note).
            logp_old = inputs.get("old_per_token_logps")
            if (logp_old is None) != self.on_policy:
                tag = "on_policy" if self.on_policy else "old_logps"
                seen = "no old log-probs (ratios are 1 by construction)" if logp_old is None else "old log-probs"
                self._warn_once(
                    "ratio_source",
                    f"sapo-monitor: the run is tagged ratio_source={tag} from TRL's config, "
                    f"but TRL's batches carry {seen}",
                )
            logp_old = logp_new if logp_old is None else logp_old.detach()
            optional: dict[str, Any] = {}
            if entropy is not None:
                optional["entropy"] = entropy
            if rewards is not None:
                optional["rewards"] = rewards[torch.isfinite(rewards)].to(logp_new.device)
            rollout = inputs.get("sampling_per_token_logps")
            if rollout is not None:
                # vLLM leaves NaN where it could not score a token; TRL treats those as no mismatch.
                rollout = torch.where(torch.isnan(rollout), logp_old, rollout.detach())
                optional["logp_rollout"] = rollout
            self.monitor.observe(
                logp_new=logp_new,
                logp_old=logp_old,
                advantages=inputs["advantages"].detach(),
                mask=mask.detach(),
                **optional,
            )
        except Exception as exc:  # never break training; say it once
            if getattr(self.monitor, "strict", False):
                raise
            self._warn_once("observe", f"sapo-monitor: observing a TRL micro-batch failed ({exc!r}); training goes on")


    # ---- helpers ------------------------------------------------------------------------------
    def _warn_once(self, key: str, message: str, category: type[Warning] = RuntimeWarning) -> None:
        if key in self._warned:
            return
        self._warned.add(key)
        logger.warning(message)
        warnings.warn(message, category, stacklevel=3)

    def _disable(self, reason: str) -> None:
        self._disabled_reason = reason
        self._warn_once("disabled", f"sapo-monitor: {reason}")



def to_host(**values: Any) -> dict[str, float]:
    """Scalars (0-d tensors or numbers) as floats, with one device-to-host copy for all device tensors."""
    import torch

    out = {k: float(v) for k, v in values.items() if v is not None and not isinstance(v, torch.Tensor)}
    tensors = {k: v for k, v in values.items() if isinstance(v, torch.Tensor)}
    if tensors:
        devices = {t.device for t in tensors.values()}
        if len(devices) == 1:
            stacked = torch.stack([t.detach().reshape(()).double() for t in tensors.values()])
            out.update(zip(tensors, stacked.tolist(), strict=True))
        else:
            out.update({k: float(t) for k, t in tensors.items()})
    return out

