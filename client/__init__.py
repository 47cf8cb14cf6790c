"""sapo-monitor's client: per-step stability statistics of SAPO / GRPO / GSPO training, delivered in the
background to the sapo-monitor service (or to an offline spool).

    from sapo_monitor import client
    mon = client.attach(trainer, run="sapo-1", server="http://127.0.0.1:8321")   # supported trainers
    mon = client.init(run="sapo-1", server=..., algo="sapo")                       # any training loop
    mon.observe(logp_new=..., logp_old=..., advantages=..., mask=...)              # per micro-batch
    mon.end_step(step, loss=..., grad_norm=..., lr=...)                            # per optimizer step

Importing this package is light (no torch, no httpx): the service imports ``sapo_monitor.client.wire``
through it. Everything below is loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sapo_monitor.client.adapters import attach, register_adapter
    from sapo_monitor.client.errors import (
        AdapterNotFoundError,
        ConfigError,
        DeliveryError,
        InputError,
        SapoMonitorError,
        SpoolError,
        TransportError,
    )
    from sapo_monitor.client.monitor import Monitor, init
    from sapo_monitor.client.stats import StatsConfig, StepAccumulator, compute_step_stats

__all__ = [
    "AdapterNotFoundError",
    "ConfigError",
    "DeliveryError",
    "InputError",
    "Monitor",
    "SapoMonitorError",
    "SpoolError",
    "StatsConfig",
    "StepAccumulator",
    "TransportError",
    "attach",
    "compute_step_stats",
    "init",
    "register_adapter",
]

_WHERE = {
    "attach": "adapters",
    "register_adapter": "adapters",
    "Monitor": "monitor",
    "init": "monitor",
    "StatsConfig": "stats",
    "StepAccumulator": "stats",
    "compute_step_stats": "stats",
    **{name: "errors" for name in __all__ if name.endswith("Error")},
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'sapo_monitor.client' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"sapo_monitor.client.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
