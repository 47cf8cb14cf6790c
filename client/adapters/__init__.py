"""Adapters: ``attach(trainer, ...)`` finds the one for the trainer's type and wires its hooks.

An adapter is registered under the qualified name of a trainer class (``module.QualName``) and is
matched against ``type(trainer).__mro__``, so subclasses match too and nothing is imported for a
trainer of another kind: a factory given as ``"module:function"`` is imported only when it matches.
A factory has the signature ``factory(trainer, **init_kwargs) -> Monitor``: it reads the algorithm,
the run config and the ``StatsConfig`` from the trainer (unless given), calls ``init`` and hooks in.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Union

from sapo_monitor.client.errors import AdapterNotFoundError

if TYPE_CHECKING:
    from sapo_monitor.client.monitor import Monitor

__all__ = ["AdapterFactory", "attach", "find_adapter", "register_adapter", "supported_types"]

AdapterFactory = Callable[..., "Monitor"]
_REGISTRY: dict[str, Union[AdapterFactory, str]] = {}  # noqa: UP007 (string forward reference)


def register_adapter(type_path: str, factory: AdapterFactory | str) -> None:
    """Register ``factory`` (a callable or ``"module:function"``) for the class named ``type_path``."""
    _REGISTRY[type_path] = factory


def supported_types() -> list[str]:
    return sorted(_REGISTRY)


def find_adapter(trainer: object) -> AdapterFactory:
    """The factory for the most specific registered class in ``type(trainer).__mro__``."""
    for cls in type(trainer).__mro__:
        factory = _REGISTRY.get(f"{cls.__module__}.{cls.__qualname__}")
        if factory is None:
            continue
        if isinstance(factory, str):
            module, _, attr = factory.partition(":")
            factory = getattr(importlib.import_module(module), attr)
        return factory
    kind = type(trainer)
    raise AdapterNotFoundError(
        f"sapo-monitor has no adapter for {kind.__module__}.{kind.__qualname__}; supported trainer types "
        f"(and their subclasses): {', '.join(supported_types())}. For another trainer, call "
        "sapo_monitor.client.init() and monitor.observe()/end_step() from its training step."
    )


def attach(trainer: object, **init_kwargs: Any) -> Monitor:
    """``init(**init_kwargs)`` plus the trainer's hooks; returns the Monitor.

    Takes the arguments of :func:`sapo_monitor.client.init` (run, project, server, token, spool_dir,
    algo, config, tags, stats_config, ...); algo, config and stats_config default to the trainer's own.

    Raises:
        AdapterNotFoundError: no adapter supports the trainer's type (the message lists those that do).
    """
    return find_adapter(trainer)(trainer, **init_kwargs)


# The bundled reference trainer.
register_adapter("sapo_monitor.trainer.train.Trainer", "sapo_monitor.client.adapters.trainer:attach_trainer")
# Hugging Face TRL's GRPOTrainer (SAPO, GRPO family, GSPO); trl is imported only for such a trainer.
register_adapter("trl.trainer.grpo_trainer.GRPOTrainer", "sapo_monitor.client.adapters.trl:attach_trl")
# verl's engines (FSDP, Megatron, ...): attach(engine); the usual way is verl_enable (adapters/verl.py).
register_adapter("verl.workers.engine.base.BaseEngine", "sapo_monitor.client.adapters.verl:attach_verl")
