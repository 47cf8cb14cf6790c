"""The two places sapo-monitor hooks into verl (>= 0.9, its engine workers), patched in place, once per process.

- **The policy-loss registry** (``verl.trainer.ppo.core_algos``): ``POLICY_LOSS_REGISTRY`` becomes a dict
  that wraps every loss stored in it, those already registered and those ``register_policy_loss`` adds later,
  so ``get_policy_loss_fn(loss_mode)`` (which verl's ``ppo_loss`` calls per micro-batch) returns a wrapper
  that calls the configured loss unchanged, returns its result untouched, and then hands ``old_log_prob``,
  ``log_prob``, ``advantages`` and ``response_mask`` to ``on_loss``. The decorator still returns the
  original function, so code calling a loss directly is not affected.
- **The engine's optimizer step**: ``BaseEngine.train_batch`` (zero_grad, forward-backward over the
  micro-batches, ``optimizer_step``; no verl engine overrides it) is wrapped, so ``on_step`` runs once per
  optimizer step with the engine and its outputs. Only the calls made inside it are observed: a loss
  computed elsewhere (evaluation, a forward-only pass) is not part of an optimizer step.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["LOSS_ARGS", "StepContext", "install_hooks", "uninstall_hooks"]

# verl's PolicyLossFn parameters, in order (positional calls are mapped by these names).
LOSS_ARGS = ("old_log_prob", "log_prob", "advantages", "response_mask", "loss_agg_mode", "config",
             "rollout_is_weights")
_WRAPPED = "__sapo_monitor_wraps__"


@dataclass
class StepContext:
    """The optimizer step in progress on this thread: its engine and whether a policy loss ran in it."""

    engine: Any
    losses: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


OnLoss = Callable[[StepContext, dict[str, Any]], None]
OnStep = Callable[[StepContext, Any], None]

_local = threading.local()
_installed: dict[str, Any] = {}  # the original train_batch, for uninstall_hooks


def current_step() -> StepContext | None:
    return getattr(_local, "step", None)


def wrap_loss(fn: Callable[..., Any], on_loss: OnLoss) -> Callable[..., Any]:
    if getattr(fn, _WRAPPED, None) is not None:
        return fn

    @functools.wraps(fn)
    def monitored_policy_loss(*args: Any, **kwargs: Any) -> Any:
        result = fn(*args, **kwargs)  # the configured loss, unchanged
        ctx = current_step()
        if ctx is not None:
            ctx.losses += 1
            on_loss(ctx, {**dict(zip(LOSS_ARGS, args, strict=False)), **kwargs})  # never raises (the session catches)
        return result

    setattr(monitored_policy_loss, _WRAPPED, fn)
    return monitored_policy_loss


class _WrappingRegistry(dict):  # type: ignore[type-arg]
    """verl's loss registry: every function stored is stored wrapped."""

    def __init__(self, items: dict[str, Callable[..., Any]], on_loss: OnLoss) -> None:
        super().__init__()
        self.on_loss = on_loss
        for name, fn in items.items():
            self[name] = fn

    def __setitem__(self, name: str, fn: Callable[..., Any]) -> None:
        super().__setitem__(name, wrap_loss(fn, self.on_loss))


def install_hooks(on_loss: OnLoss, on_step: OnStep) -> None:
    """Patch verl's registry and ``BaseEngine.train_batch`` (idempotent: a second call replaces the callbacks)."""
    from verl.trainer.ppo import core_algos
    from verl.workers.engine import base

    registry = core_algos.POLICY_LOSS_REGISTRY
    if isinstance(registry, _WrappingRegistry):
        registry.on_loss = on_loss
        for name, fn in list(registry.items()):  # rewrap with the new callback
            super(_WrappingRegistry, registry).__setitem__(name, wrap_loss(getattr(fn, _WRAPPED), on_loss))
    else:
        # get_policy_loss_fn and register_policy_loss read the module global at call time.
        core_algos.POLICY_LOSS_REGISTRY = _WrappingRegistry(registry, on_loss)

    original = _installed.setdefault("train_batch", base.BaseEngine.train_batch)

    @functools.wraps(original)
    def train_batch(self: Any, data: Any, loss_function: Callable[..., Any]) -> Any:
        outer = current_step()
        ctx = _local.step = StepContext(self)
        try:
            outputs = original(self, data, loss_function)
        finally:
            _local.step = outer
        on_step(ctx, outputs)  # never raises (the session catches)
        return outputs

    base.BaseEngine.train_batch = train_batch  # type: ignore[method-assign]


def uninstall_hooks() -> None:
    """Undo :func:`install_hooks` (tests; a loss registered meanwhile stays registered, unwrapped)."""
    from verl.trainer.ppo import core_algos
    from verl.workers.engine import base

    registry = core_algos.POLICY_LOSS_REGISTRY
    if isinstance(registry, _WrappingRegistry):
        core_algos.POLICY_LOSS_REGISTRY = {name: getattr(fn, _WRAPPED, fn) for name, fn in registry.items()}
    if "train_batch" in _installed:
        base.BaseEngine.train_batch = _installed.pop("train_batch")  # type: ignore[method-assign]
    _installed.clear()
