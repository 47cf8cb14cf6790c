"""One rank of the verl test: the real verl 0.9 loss path driven the way its engine workers drive it.

verl's FSDP / Megatron engines need GPUs and a Hugging Face model; what sits above and below them is
verl's own code and runs here unchanged: ``BaseEngine.train_batch`` (zero_grad, forward-backward,
optimizer_step), the worker's loss function ``partial(ppo_loss, config=ActorConfig)`` (``ppo_loss``
unpads the model's log-probs, builds verl's global-batch normalisation and calls
``get_policy_loss_fn(loss_mode)`` with ``old_log_prob``, ``log_prob``, ``advantages``,
``response_mask``), the registered SAPO loss itself, and its ``agg_loss``. ``TinyEngine`` stands in for
FSDPEngine's model parts only: per-position log-probs as a parameter, a data-parallel gradient average
over gloo, clipping and an SGD step, as FSDPEngine.optimizer_step does.
"""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path
from typing import Any

import torch

P, R, B, MICRO = 3, 12, 6, 3  # prompt and response lengths, sequences per rank and step, per micro-batch
STEPS = 3


def rank_batch(step: int, rank: int) -> dict[str, torch.Tensor]:
    """One rank's mini-batch of one step: old log-probs, advantages per sequence, ragged responses."""
    g = torch.Generator().manual_seed(7000 + 100 * step + rank)
    old = -torch.rand(B, R, generator=g, dtype=torch.float64) * 3 - 0.05
    base = torch.zeros(B, P + R, dtype=torch.float64)
    base[:, P - 1:P + R - 1] = old + 0.4 * torch.randn(B, R, generator=g, dtype=torch.float64)
    lengths = torch.randint(2, R + 1, (B,), generator=g)
    mask = torch.arange(R).unsqueeze(0) < lengths.unsqueeze(1)
    adv = torch.randn(B, generator=g, dtype=torch.float64)
    adv[0] = 0.0  # a zero-signal sequence
    return {"old": old, "base": base, "mask": mask, "adv": adv.unsqueeze(1).expand(B, R).contiguous()}


def make_engine(group: Any) -> Any:
    import torch.distributed as dist
    from verl.workers.engine.base import BaseEngine

    class TinyEngine(BaseEngine):
        def __init__(self) -> None:
            self.shift = torch.nn.Parameter(torch.zeros(P + R, dtype=torch.float64))
            self.optimizer = torch.optim.SGD([self.shift], lr=0.5)

        def is_mp_src_rank_with_outputs(self) -> bool:
            return True

        def get_data_parallel_group(self) -> Any:
            return group

        def get_data_parallel_size(self) -> int:
            return dist.get_world_size(group)

        def get_data_parallel_rank(self) -> int:
            return dist.get_rank(group)

        def optimizer_zero_grad(self) -> None:
            self.optimizer.zero_grad()

        def log_probs(self, data: Any) -> torch.Tensor:
            return (data["base"] + self.shift).reshape(-1)  # unpadded: every position attends

        def forward_backward_batch(self, data: Any, loss_function: Any, forward_only: bool = False) -> Any:
            from verl.utils import tensordict_utils as tu

            tokens = data["response_mask"].sum().to(torch.float64)
            dist.all_reduce(tokens, group=group)  # FSDPEngine: the global batch's token count
            tu.assign_non_tensor(data, batch_num_tokens=tokens.item(), dp_size=self.get_data_parallel_size(),
                                 global_batch_size=B * self.get_data_parallel_size())
            losses = []
            for lo in range(0, B, MICRO):
                micro = data[lo:lo + MICRO]
                loss, _ = loss_function(model_output={"log_probs": self.log_probs(micro)}, data=micro,
                                        dp_group=group)
                loss.backward()
                losses.append(loss.item())
            assert self.shift.grad is not None
            dist.all_reduce(self.shift.grad, op=dist.ReduceOp.AVG, group=group)  # data-parallel gradient
            return {"loss": losses, "metrics": {}}

        def optimizer_step(self) -> torch.Tensor:
            grad_norm = torch.nn.utils.clip_grad_norm_([self.shift], max_norm=1.0)
            self.optimizer.step()
            return grad_norm

    return TinyEngine()


def tensordict(batch: dict[str, torch.Tensor]) -> Any:
    from tensordict import TensorDict

    return TensorDict({"prompts": torch.ones(B, P, dtype=torch.long), "responses": torch.ones(B, R, dtype=torch.long),
                       "attention_mask": torch.ones(B, P + R, dtype=torch.long), "response_mask": batch["mask"],
                       "old_log_probs": batch["old"], "advantages": batch["adv"], "base": batch["base"]},
                      batch_size=[B])


def train(engine: Any, loss_fn: Any, rank: int, out: Path | None) -> list[float]:
    """STEPS optimizer steps through verl's BaseEngine.train_batch; the grad norms (and, with ``out``, the
    tensors each step's loss saw, for the reference computation)."""
    norms = []
    for step in range(1, STEPS + 1):
        batch = rank_batch(step, rank)
        if out is not None:
            with torch.no_grad():
                new = (batch["base"] + engine.shift)[:, P - 1:P + R - 1]
            torch.save({"logp_new": new.clone(), "logp_old": batch["old"], "advantages": batch["adv"],
                        "mask": batch["mask"]}, out / f"r{rank}-s{step}.pt")
        outputs = engine.train_batch(tensordict(batch), loss_function=loss_fn)
        norms.append(float(outputs["metrics"]["grad_norm"]))
    return norms


def verl_worker(rank: int, world: int, out: Path, *, site: str, server: str) -> dict[str, Any]:
    if site:
        sys.path.insert(0, site)  # this process only: the test process never imports verl
    import torch.distributed as dist
    from sapo_monitor.client.adapters import verl as adapter
    from sapo_monitor.client.settings import ClientSettings
    from verl.workers.config import FSDPActorConfig
    from verl.workers.utils.losses import ppo_loss

    config = FSDPActorConfig(strategy="fsdp", ppo_mini_batch_size=B * world, ppo_micro_batch_size_per_gpu=MICRO,
                             rollout_n=1, clip_ratio_low=0.2, clip_ratio_high=0.28, tau_pos=1.0, tau_neg=1.05,
                             policy_loss={"loss_mode": "sapo"})
    loss_fn = partial(ppo_loss, config=config)  # what verl's actor worker sets as its loss function
    group = dist.group.WORLD

    bare = make_engine(group)
    bare_norms = train(bare, loss_fn, rank, None)

    settings = ClientSettings(spool_dir=out / f"spool{rank}", flush_interval=0.05, timeout=2.0, close_timeout=10.0)
    adapter.install(run="verl-dp", server=server, settings=settings, strict=True)
    engine = make_engine(group)
    norms = train(engine, loss_fn, rank, out)
    monitor = adapter.session().monitor_for(engine)  # type: ignore[union-attr]
    assert monitor is not None
    stats_config = monitor.stats_config
    dist.barrier()  # every rank's summaries written before rank 0 closes (the store lives in rank 0)
    adapter.uninstall(timeout=20.0)
    dist.barrier()
    return {"bare_norms": bare_norms, "norms": norms, "same_params": bool(torch.equal(bare.shift, engine.shift)),
            "rank": monitor.rank, "spool": (out / f"spool{rank}").exists(), "algo": monitor.spec.algorithm,
            "stats_config": [stats_config.tau_pos, stats_config.tau_neg, stats_config.eps_low, stats_config.eps_high]}
