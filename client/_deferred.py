"""Small steps' statistics, computed a batch of steps at a time.

A small step (a few thousand tokens) costs its statistics per operation, not per token: ~150 tiny
operations whatever the size, a noticeable share of a step that itself takes a few milliseconds.
So the monitor keeps its own copies of up to ``max_steps`` small steps of one shape and computes them
together (``StepAccumulator.add_steps``: the same operations on K times the data), then hands their
records to delivery in order. A step waits at most ``max_steps`` steps or ``max_wait`` seconds (checked
when the next step ends); ``flush`` (also run by ``Monitor.flush`` and ``close``) computes what waits.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from sapo_monitor.client import wire
from sapo_monitor.client.stats import CPU_BLOCK_POSITIONS, StatsConfig, StepAccumulator
from sapo_monitor.client.stats.summary import StepSummary

if TYPE_CHECKING:
    import torch

__all__ = ["DeferredSteps", "record_from_stats"]

_T = TypeVar("_T")


@dataclass
class _Pending:
    step: int
    time: float
    tensors: dict[str, torch.Tensor]  # one micro-batch, our own copies
    values: dict[str, float]  # loss, grad_norm, lr, extra metrics


def record_from_stats(step: int, when: float, stats: dict[str, float | list[int]],
                      values: dict[str, float]) -> wire.StepRecord:
    """A step's record: its statistics (the histogram apart) plus the scalars given to ``end_step``."""
    metrics: dict[str, float] = {}
    histograms: dict[str, list[int]] = {}
    for name, value in stats.items():
        if isinstance(value, list):
            histograms[wire.LOG_RATIO_HIST_NAME] = value
        else:
            metrics[name] = value
    metrics.update(values)
    return wire.StepRecord(step=step, time=when, metrics=metrics, histograms=histograms)


class DeferredSteps:
    """Holds small steps until a batch is full, then computes and emits their records in order."""

    def __init__(self, config: StatsConfig, *, max_steps: int, max_wait: float,
                 emit: Callable[[wire.StepRecord], None], warn: Callable[[str, str], None],
                 emit_summary: Callable[[int, float, StepSummary, dict[str, float]], object] | None = None) -> None:
        self.config = config
        # Data-parallel runs: each step's mergeable summary (for rank 0's reduction) instead of its record.
        self._emit_summary = emit_summary
        self.max_steps = max_steps
        self.max_wait = max_wait
        self._emit = emit
        self._warn = warn
        self._pending: list[_Pending] = []
        self._key: tuple | None = None
        self._acc = StepAccumulator(config)
        # flush() may come from another thread (Monitor.flush, close at exit) while training adds steps.
        self._lock = threading.RLock()

    @staticmethod
    def batch_key(tensors: dict[str, torch.Tensor]) -> tuple | None:
        """What steps must share to be computed together; None for a step that is never deferred
        (on an accelerator, where operations are cheap, or too large for one block)."""
        first = tensors["logp_new"]
        if first.device.type != "cpu" or first.numel() * 2 > CPU_BLOCK_POSITIONS:
            return None
        return tuple((name, tuple(t.shape), t.dtype) for name, t in sorted(tensors.items()))

    def add(self, step: int, when: float, tensors: dict[str, torch.Tensor], values: dict[str, float],
            key: tuple) -> None:
        """Queue one small step (``key`` from :meth:`batch_key`); computes the batch when it is due."""
        with self._lock:
            self._add(step, when, tensors, values, key)

    def _add(self, step: int, when: float, tensors: dict[str, torch.Tensor], values: dict[str, float],
             key: tuple) -> None:
        if self._pending and (key != self._key or
                              (len(self._pending) + 1) * tensors["logp_new"].numel() > CPU_BLOCK_POSITIONS):
            self._flush()
        self._key = key
        self._pending.append(_Pending(step, when, tensors, values))
        if len(self._pending) >= self.max_steps or time.time() - self._pending[0].time >= self.max_wait:
            self._flush()

    def flush(self) -> None:
        """Compute every waiting step and emit its record (statistics lost to an error are logged)."""
        with self._lock:
            self._flush()

    def _flush(self) -> None:
        pending, self._pending, self._key = self._pending, [], None
        if not pending:
            return
        if self._emit_summary is None:
            stats: list[dict[str, float | list[int]]] = self._computed(
                pending, self._acc.results, [{} for _ in pending])
            for p, s in zip(pending, stats, strict=True):
                self._emit(record_from_stats(p.step, p.time, s, p.values))
            return
        # An empty summary for a step whose statistics failed: rank 0 still hears from this rank.
        summaries = self._computed(pending, self._acc.summaries, [StepSummary() for _ in pending])
        for p, summary in zip(pending, summaries, strict=True):
            self._emit_summary(p.step, p.time, summary, p.values)

    def _computed(self, pending: list[_Pending], read: Callable[[], list[_T]], failed: list[_T]) -> list[_T]:
        """The waiting steps through the accumulator as one batch, read out by ``read``; ``failed``
        (logged) when that raises."""
        import torch

        try:
            names = pending[0].tensors
            self._acc.reset()
            self._acc.add_steps(**{name: torch.stack([p.tensors[name] for p in pending]) for name in names})
            return read()
        except Exception as exc:
            steps = f"{pending[0].step}..{pending[-1].step}"
            self._warn(f"stats-{type(exc).__name__}", f"sapo-monitor: statistics of steps {steps} failed: {exc}")
            return failed
        finally:
            self._acc.reset()
