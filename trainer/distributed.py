"""Data-parallel training of the bundled trainer over ``torch.distributed`` (gloo on CPU).

Each of N ranks holds the same model (same seed), samples its share of each rollout's prompts
(``prompts_per_rollout / N``, whole groups of G responses, so group advantages never span ranks) from
its own generator, takes mini-batches of ``minibatch_size / N`` responses, and averages gradients with
one all-reduce per optimizer step before clipping: every rank takes the same optimizer step, and a seed
gives the same run for a given N. The warm start draws from the shared seed, identically on every rank.

``launch`` runs N ranks as spawned processes on this machine (``sapo-monitor train --nproc N``): rank 0's
steps are passed back for the progress display, and its summary is returned. With ``monitor`` set, every
rank attaches the client; rank 0's records cover all ranks' tokens (``client/_distributed.py``).
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import socket
import traceback
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import torch

from .train import StepLog, TrainConfig, Trainer, TrainSummary

__all__ = ["DistributedTrainer", "launch"]


class DistributedTrainer(Trainer):
    """A ``Trainer`` that is one rank of a data-parallel group (``torch.distributed`` initialised)."""

    def __init__(self, config: TrainConfig, group: Any = None) -> None:
        import torch.distributed as dist

        super().__init__(config)
        self.group = group
        self.rank = dist.get_rank(group)
        self.world = dist.get_world_size(group)
        for name in ("prompts_per_rollout", "minibatch_size"):
            if getattr(config, name) % self.world:
                raise ValueError(f"{name}={getattr(config, name)} must be a multiple of the {self.world} ranks")
        self.prompts_per_rollout = config.prompts_per_rollout // self.world
        self.minibatch_size = config.minibatch_size // self.world
        # The seed's generator for the warm start (the same on every rank); a rank's own for the rest.
        self._shared_generator = self.generator
        self.generator = torch.Generator().manual_seed(config.seed * 7919 + 1 + self.rank)

    def _warm_start(self) -> None:
        rank_generator, self.generator = self.generator, self._shared_generator
        try:
            super()._warm_start()
        finally:
            self.generator = rank_generator

    def _sync_gradients(self) -> None:
        import torch.distributed as dist

        params = list(self.model.parameters())
        # A parameter without a gradient here (an MoE expert no token chose) may have one elsewhere.
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, group=self.group)
        flat /= self.world
        at = 0
        for p, g in zip(params, grads, strict=True):
            n = g.numel()
            p.grad = flat[at : at + n].view_as(p)
            at += n


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rank_main(rank: int, world: int, port: int, config: TrainConfig, monitor: dict[str, Any] | None,
               out: Any) -> None:
    import torch.distributed as dist

    try:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                                timeout=timedelta(seconds=120))
        trainer = DistributedTrainer(config)
        mon = None
        if monitor is not None:
            from sapo_monitor.client import attach

            mon = attach(trainer, **monitor)
        try:
            summary = trainer.train(progress=(lambda e: out.put(("step", e))) if rank == 0 else None)
        finally:
            if mon is not None:
                mon.close()
        if rank == 0:
            out.put(("done", summary))
        dist.destroy_process_group()
    except Exception:
        out.put(("error", f"rank {rank}: {traceback.format_exc()}"))
        raise


def launch(config: TrainConfig, nproc: int, *, monitor: dict[str, Any] | None = None,
           progress: Callable[[StepLog], None] | None = None, timeout: float = 3600.0) -> TrainSummary:
    """Train ``config`` on ``nproc`` local ranks (spawned processes, gloo); rank 0's summary.

    ``monitor``: keyword arguments of ``client.attach`` for every rank (None: not monitored).

    Raises:
        RuntimeError: a rank failed (its traceback in the message) or the run exceeded ``timeout``.
    """
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_rank_main, args=(r, nproc, port, config, monitor, out), daemon=True)
             for r in range(nproc)]
    for p in procs:
        p.start()
    summary: TrainSummary | None = None
    try:
        while summary is None:
            try:
                kind, value = out.get(timeout=timeout)
            except queue.Empty as exc:
                raise RuntimeError(f"no word from the ranks for {timeout:g} s") from exc
            if kind == "step" and progress is not None:
                progress(value)
            elif kind == "done":
                summary = value
            elif kind == "error":
                raise RuntimeError(value)
        for p in procs:
            p.join(60)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
    return summary
