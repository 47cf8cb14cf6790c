"""The statistics' thresholds and fixed choices, without torch (the CLI and settings import them)."""

from __future__ import annotations

from dataclasses import dataclass

from sapo_monitor.client.errors import ConfigError

__all__ = ["CPU_BLOCK_POSITIONS", "OPTIONAL_TENSORS", "QUANTILES", "ZERO_SIGNAL_ABS", "StatsConfig"]

QUANTILES: tuple[tuple[str, float], ...] = (
    ("log_ratio.p01", 0.01),
    ("log_ratio.p05", 0.05),
    ("log_ratio.p50", 0.50),
    ("log_ratio.p95", 0.95),
    ("log_ratio.p99", 0.99),
)
ZERO_SIGNAL_ABS = 1e-8  # |A_i| below this: the sequence carries no learning signal
OPTIONAL_TENSORS = ("entropy", "rewards", "logp_rollout", "experts_old", "experts_new")

# [B, T] positions per block of work on a CPU (temporaries stay in cache); a batch of small steps
# (``_deferred.py``) stays within one block.
CPU_BLOCK_POSITIONS = 1 << 15


@dataclass(frozen=True)
class StatsConfig:
    """The thresholds the statistics use; defaults are SAPO's and GSPO's published values."""

    tau_pos: float = 1.0  # SAPO gate temperature for A > 0
    tau_neg: float = 1.05  # SAPO gate temperature for A < 0
    eps_low: float = 0.2  # GRPO token band [1 - eps_low, 1 + eps_high]
    eps_high: float = 0.2
    seq_eps_low: float = 3e-4  # GSPO sequence band [1 - seq_eps_low, 1 + seq_eps_high]
    seq_eps_high: float = 4e-4
    saturation_threshold: float = 0.1  # a token's SAPO gate is "saturated" when w < this

    def __post_init__(self) -> None:
        # The bounds are what make the definitions meaningful (and let the statistics skip masking the
        # flags of excluded tokens, where r = 1 and w = 1).
        for name in ("tau_pos", "tau_neg"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"StatsConfig.{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("eps_low", "eps_high", "seq_eps_low", "seq_eps_high"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"StatsConfig.{name} must be >= 0, got {getattr(self, name)!r}")
        if not 0 < self.saturation_threshold <= 1:
            raise ConfigError(f"StatsConfig.saturation_threshold must be in (0, 1], got {self.saturation_threshold!r}")
