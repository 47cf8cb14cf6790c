"""The bundled reference trainer: a small policy learning a digit task with SAPO, GRPO, GSPO or PG.

Public face: :class:`Trainer` (with its observer hook ``add_observer``), :class:`TrainConfig`,
:func:`make_config` and the presets, :class:`StepBatch` (what observers receive), the losses.
"""

from .losses import ALGORITHMS, LossConfig, LossOutput, get_loss, grpo, gspo, pg, sapo
from .observer import Observer, StepBatch
from .train import PRESETS, StepLog, TrainConfig, Trainer, TrainSummary, make_config

__all__ = [
    "ALGORITHMS",
    "PRESETS",
    "LossConfig",
    "LossOutput",
    "Observer",
    "StepBatch",
    "StepLog",
    "TrainConfig",
    "TrainSummary",
    "Trainer",
    "get_loss",
    "grpo",
    "gspo",
    "make_config",
    "pg",
    "sapo",
]
