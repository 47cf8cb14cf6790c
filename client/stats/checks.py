"""Shape checks of one micro-batch's tensors (what ``StepAccumulator.add`` accepts), computing nothing."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from sapo_monitor.client.errors import InputError
from sapo_monitor.client.stats.config import OPTIONAL_TENSORS

if TYPE_CHECKING:
    import torch

__all__ = ["check_inputs", "check_optional_names"]


def check_inputs(logp_new: torch.Tensor, logp_old: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                 **optional_tensors: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """Check one micro-batch's shapes (what ``StepAccumulator.add`` accepts) without computing anything.

    Returns the optional tensors that were given, expert ids as [L, B, T, k].

    Raises:
        InputError: naming the argument whose shape does not fit, or an unknown optional tensor name.
    """
    check_optional_names(optional_tensors)
    _check_2d("logp_new", logp_new)
    shape = tuple(logp_new.shape)
    for name, t in (("logp_old", logp_old), ("mask", mask)):
        _check_shape(name, t, shape)
    if not hasattr(advantages, "shape") or tuple(advantages.shape) not in (shape[:1], shape):
        raise InputError(
            f"advantages has shape {tuple(getattr(advantages, 'shape', ()))}; expected [B]={shape[:1]} or [B, T]={shape}"
        )
    return _check_optional(optional_tensors, shape)




def check_optional_names(opt: Mapping[str, object]) -> None:
    unknown = sorted(set(opt) - set(OPTIONAL_TENSORS))
    if unknown:
        raise InputError(f"unknown tensor argument(s) {unknown}; expected any of {list(OPTIONAL_TENSORS)}")


def _check_optional(opt: dict[str, torch.Tensor | None], shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """The optional tensors that were given, shapes checked; expert ids as [L, B, T, k]."""
    out = {k: v for k, v in opt.items() if v is not None}
    for name in ("entropy", "logp_rollout"):
        if name in out:
            _check_shape(name, out[name], shape)
    eo, en = out.get("experts_old"), out.get("experts_new")
    if (eo is None) != (en is None):
        raise InputError("experts_old and experts_new must be given together")
    if eo is not None and en is not None:
        if eo.shape != en.shape or eo.dim() not in (3, 4) or tuple(eo.shape[-3:-1]) != shape:
            raise InputError(
                f"experts_old {tuple(eo.shape)} and experts_new {tuple(en.shape)} must both be "
                f"[B, T, k] or [L, B, T, k] with [B, T] = {shape}"
            )
        out["experts_old"], out["experts_new"] = eo.reshape(-1, *eo.shape[-3:]), en.reshape(-1, *en.shape[-3:])
    return out


def _check_2d(name: str, t: object) -> None:
    if not hasattr(t, "dim") or not hasattr(t, "shape"):
        raise InputError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != 2:  # type: ignore[attr-defined]
        raise InputError(f"{name} must be [B, T], got shape {tuple(t.shape)}")  # type: ignore[attr-defined]


def _check_shape(name: str, t: object, shape: tuple[int, ...]) -> None:
    if not hasattr(t, "shape"):
        raise InputError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if tuple(t.shape) != shape:  # type: ignore[attr-defined]
        raise InputError(f"{name} has shape {tuple(t.shape)}; expected {shape} like logp_new")  # type: ignore[attr-defined]
