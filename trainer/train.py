"""The RL loop: rollouts from pi_old, then K optimizer steps over mini-batches, observers after each.

How to run: ``sapo-monitor train --algo sapo --preset default`` (see ``--help``), or from Python::

    from sapo_monitor.trainer import Trainer, make_config
    trainer = Trainer(make_config("stress", algo="grpo", steps=200, seed=1))
    trainer.add_observer(lambda batch: print(batch.step, batch.loss))
    summary = trainer.train()

One loop in fixed order: (optional supervised warm start), then per rollout: sample and score G
responses per prompt with the current weights (pi_old), and for each epoch and each shuffled
mini-batch: forward, loss, backward, clip, step (skipped when the loss or gradient is non-finite),
record, notify observers.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.nn import functional as F

from .faults import ShortAnswerTask, apply_faults, inject_nan, parse_schedule
from .losses import LossConfig, get_loss
from .model import ModelConfig, Policy
from .observer import Observer, StepBatch
from .rollout import Rollout, generate_rollout, sequence_logprobs
from .task import DigitTask

__all__ = ["PRESETS", "StepLog", "TrainConfig", "TrainSummary", "Trainer", "make_config"]

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    algo: str = "sapo"  # sapo | grpo | gspo | pg
    preset: str = "default"  # the preset these values came from (recorded, not applied)
    seed: int = 0
    steps: int = 300  # optimizer steps
    # torch CPU threads while train() runs (restored after); None keeps torch's setting. One thread is
    # fastest for this small model and degrades gracefully when the CPU is shared: two OpenMP threads
    # on two busy cores can be 10x slower. Bitwise reproducibility holds for a fixed thread count.
    threads: int | None = 1
    # Task
    task: str = "reverse"
    base: int = 10
    min_digits: int = 3
    max_digits: int = 5
    # Policy
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 64
    moe: bool = False
    n_experts: int = 4
    top_k: int = 2
    router_noise: float = 0.0  # std of router-logit noise where enabled below
    train_router_noise: bool = False  # noisy routing in training forwards too (MoE)
    rollout_router_noise: bool = False  # noisy routing in the rollout engine (MoE): mismatch
    rollout_bf16: bool = False  # sample from a bfloat16 copy: mismatch
    # Rollouts and updates
    prompts_per_rollout: int = 16
    group_size: int = 8
    minibatch_size: int = 32
    epochs: int = 1  # passes over each rollout batch; K = epochs * batch / minibatch_size
    temperature: float = 1.0
    lr: float = 1e-3
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0  # None: no clipping
    skip_nonfinite: bool = True  # skip the optimizer step when loss or gradient is NaN/Inf
    warm_start_steps: int = 20  # supervised steps on correct answers before RL
    warm_start_lr: float = 3e-3
    # Losses
    tau_pos: float = 1.0
    tau_neg: float = 1.05
    eps_low: float = 0.2
    eps_high: float = 0.2
    seq_eps_low: float = 3e-4
    seq_eps_high: float = 4e-4
    # Faults (trainer/faults.py): a schedule of changes at given steps, e.g. "150:lr=2e-2 120:reward=short"
    # (items separated by spaces), and the two fault-only settings it can switch on from the start too.
    faults: str = ""
    reward: str = "task"  # task | short (a hackable reward paying short answers)
    nan_logprob: float = 0.0  # share of response tokens whose new log-prob is NaN in the loss

    def loss_config(self) -> LossConfig:
        return LossConfig(
            tau_pos=self.tau_pos,
            tau_neg=self.tau_neg,
            eps_low=self.eps_low,
            eps_high=self.eps_high,
            seq_eps_low=self.seq_eps_low,
            seq_eps_high=self.seq_eps_high,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Presets are overrides of the TrainConfig defaults.
PRESETS: dict[str, dict[str, Any]] = {
    # Learns steadily: on-policy-ish (4 mini-batch steps per rollout), clipped gradients.
    "default": {},
    # Off-policy pressure: 32 optimizer steps per rollout (4 epochs x 8 mini-batches), twice the learning
    # rate, no gradient clipping, on an MoE policy whose rollout engine routes with noise
    # (training-inference mismatch). ``pg`` collapses within ~150 steps (reward and entropy fall,
    # ratio spread explodes); the gated and clipped losses hold up to different degrees.
    "stress": {
        "moe": True,
        "router_noise": 0.5,
        "rollout_router_noise": True,
        "minibatch_size": 16,
        "epochs": 4,
        "lr": 2e-3,
        "max_grad_norm": None,
    },
    # The regime the SAPO paper is about: ratios stay near 1 but vary. An MoE policy routes with noise in
    # the training forwards as well as in the rollout engine, so routing changes enter the ratio from
    # each rollout's first step; 8 optimizer steps per rollout (2 epochs x 4 mini-batches), gradients
    # clipped at 1.0, the default learning rate. A healthy regime for every loss (README: the table).
    "routing": {
        "moe": True,
        "router_noise": 0.5,
        "train_router_noise": True,
        "rollout_router_noise": True,
        "epochs": 2,
        "max_grad_norm": 1.0,
    },
}


def make_config(preset: str = "default", **overrides: Any) -> TrainConfig:
    """A TrainConfig from a preset plus keyword overrides (unknown names raise ``TypeError``)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    return TrainConfig(**{**PRESETS[preset], "preset": preset, **overrides})


@dataclass(frozen=True)
class StepLog:
    """What the trainer keeps of each optimizer step (for progress display and the summary)."""

    step: int
    rollout: int
    reward: float  # mean reward of the mini-batch's responses
    entropy: float  # mean entropy over response tokens
    ratio_std: float  # population std of the token ratios (finite ones)
    ratio_max: float
    loss: float
    grad_norm: float
    skipped: bool  # the optimizer step was skipped for a non-finite loss or gradient


@dataclass
class TrainSummary:
    algo: str
    preset: str
    seed: int
    steps: int
    rollouts: int
    window: int  # steps averaged for reward_first / reward_last
    reward_first: float
    reward_last: float
    reward_gain: float
    entropy_first: float
    entropy_last: float
    ratio_std_max: float
    ratio_std_last: float
    nonfinite_steps: int  # steps whose loss or gradient norm was NaN/Inf
    skipped_steps: int
    wall_s: float
    history: list[StepLog] = field(default_factory=list, repr=False)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


class Trainer:
    """The bundled reference trainer. ``add_observer`` is its public hook (see ``observer.py``)."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.loss_fn = get_loss(config.algo)
        self.schedule = parse_schedule(config.faults)  # ValueError names a bad item
        task_cls = ShortAnswerTask if config.reward == "short" else DigitTask
        self.task = task_cls(config.task, config.base, config.min_digits, config.max_digits)
        self.model_config = ModelConfig(
            vocab_size=self.task.vocab_size,
            block_size=self.task.prompt_len + self.task.response_len,
            n_layer=config.n_layer,
            n_head=config.n_head,
            n_embd=config.n_embd,
            moe=config.moe,
            n_experts=config.n_experts,
            top_k=config.top_k,
            router_noise=config.router_noise,
        )
        # The trainer draws every random number from its own generator, seeded once: model init
        # uses the global RNG (under fork_rng, so the caller's global state is left alone).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.model = Policy(self.model_config)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        self.history: list[StepLog] = []
        self._observers: list[Observer] = []
        self.step = 0  # optimizer steps taken
        self.stop_reason: str | None = None  # set by request_stop (any thread): train() ends after this step
        self.rollouts = 0  # rollout batches generated
        # This process's shares: a data-parallel rank's are 1/N of them (trainer/distributed.py).
        self.prompts_per_rollout = config.prompts_per_rollout
        self.minibatch_size = config.minibatch_size

    # -- the observer hook -------------------------------------------------------------------
    def request_stop(self, reason: str) -> None:
        """End training cleanly after the current optimizer step (safe from another thread)."""
        if self.stop_reason is None:
            self.stop_reason = reason
            log.warning("stop requested at step %d: %s", self.step, reason)

    def add_observer(self, fn: Observer) -> Observer:
        """Call ``fn(StepBatch)`` after every optimizer step; returns ``fn`` (usable as a decorator)."""
        self._observers.append(fn)
        return fn

    def remove_observer(self, fn: Observer) -> None:
        self._observers.remove(fn)

    def _notify(self, make_batch: Callable[[], StepBatch]) -> None:
        for fn in list(self._observers):
            gen_state = self.generator.get_state()
            # Fresh clones per observer, the RNGs restored after it: an observer cannot alter training.
            with torch.random.fork_rng(devices=[]), torch.no_grad():
                try:
                    fn(make_batch())
                except Exception:
                    log.exception("observer %r failed at step %d; training continues", fn, self.step)
            self.generator.set_state(gen_state)

    # -- the loop ----------------------------------------------------------------------------
    def train(self, progress: Callable[[StepLog], None] | None = None) -> TrainSummary:
        """Run ``config.steps`` optimizer steps; ``progress`` is called with each step's ``StepLog``."""
        cfg = self.config
        start = time.perf_counter()
        saved_threads = torch.get_num_threads()
        if cfg.threads is not None:
            torch.set_num_threads(cfg.threads)
        try:
            self._loop(progress)
        finally:
            torch.set_num_threads(saved_threads)
        return self._summary(self.rollouts, time.perf_counter() - start)

    def _loop(self, progress: Callable[[StepLog], None] | None) -> None:
        cfg = self.config
        self.model.train()
        if cfg.warm_start_steps and self.step == 0:
            self._warm_start()
        while self.step < cfg.steps and self.stop_reason is None:
            rollout = generate_rollout(
                self.model,
                self.task,
                n_prompts=self.prompts_per_rollout,
                group_size=cfg.group_size,
                temperature=cfg.temperature,
                generator=self.generator,
                rollout_router_noise=cfg.rollout_router_noise,
                rollout_bf16=cfg.rollout_bf16,
            )
            n = rollout.tokens.shape[0]
            minibatch = 0
            for _ in range(cfg.epochs):
                for idx in torch.randperm(n, generator=self.generator).split(self.minibatch_size):
                    if self.step >= cfg.steps or self.stop_reason is not None:
                        break
                    for fault in apply_faults(self, self.schedule, self.step + 1) if self.schedule else ():
                        log.info("step %d: scheduled change %s applied", self.step + 1, fault.spec())
                    self.step += 1
                    entry = self._optimizer_step(rollout, idx, self.rollouts, minibatch)
                    self.history.append(entry)
                    minibatch += 1
                    if progress is not None:
                        progress(entry)
            self.rollouts += 1

    def _optimizer_step(self, ro: Rollout, idx: torch.Tensor, rollout_idx: int, minibatch: int) -> StepLog:
        cfg = self.config
        tokens, mask = ro.tokens[idx], ro.mask[idx]
        out = self.model(tokens, router_noise=cfg.train_router_noise, generator=self.generator)
        logp_new, entropy = sequence_logprobs(out.logits, tokens, self.task.prompt_len, cfg.temperature)
        if cfg.nan_logprob > 0:
            logp_new = inject_nan(logp_new, mask, cfg.nan_logprob)
        res = self.loss_fn(logp_new, ro.logp_old[idx], ro.advantages[idx], mask, cfg.loss_config())

        self.optimizer.zero_grad(set_to_none=True)
        res.loss.backward()
        self._sync_gradients()
        max_norm = math.inf if cfg.max_grad_norm is None else cfg.max_grad_norm
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm))
        loss = float(res.loss.detach())
        finite = math.isfinite(loss) and math.isfinite(grad_norm)
        skipped = cfg.skip_nonfinite and not finite
        if not skipped:
            self.optimizer.step()
        lr = float(self.optimizer.param_groups[0]["lr"])

        with torch.no_grad():
            ratio = res.ratio[(mask > 0) & res.ratio.isfinite()]
            n_tok = mask.sum().clamp(min=1)
            entry = StepLog(
                step=self.step,
                rollout=rollout_idx,
                reward=float(ro.rewards[idx].mean()),
                entropy=float((entropy * mask).sum() / n_tok),
                ratio_std=float(ratio.std(unbiased=False)) if ratio.numel() else math.nan,
                ratio_max=float(ratio.max()) if ratio.numel() else math.nan,
                loss=loss,
                grad_norm=grad_norm,
                skipped=skipped,
            )
        if self._observers:
            p = self.task.prompt_len
            experts_new = None if out.experts is None else out.experts[:, :, p - 1 : -1]
            self._notify(
                lambda: StepBatch(
                    step=self.step,
                    logp_new=logp_new.detach().clone(),
                    # index_select makes fresh copies (what ``t[idx]`` gives, for less): no clone needed.
                    logp_old=ro.logp_old.index_select(0, idx),
                    advantages=ro.advantages.index_select(0, idx),
                    mask=mask.clone(),
                    rewards=ro.rewards.index_select(0, idx),
                    group_size=ro.group_size,
                    loss=loss,
                    grad_norm=grad_norm,
                    lr=lr,
                    config=_config_dict(cfg),
                    entropy=entropy.detach().clone(),
                    logp_rollout=ro.logp_rollout.index_select(0, idx),
                    experts_old=None if ro.experts_old is None else ro.experts_old.index_select(1, idx),
                    experts_new=None if experts_new is None else experts_new.detach().clone(),
                    rollout=rollout_idx,
                    minibatch=minibatch,
                )
            )
        return entry

    def _sync_gradients(self) -> None:
        """Where data-parallel ranks average their gradients (``DistributedTrainer``); one process: nothing."""

    def _warm_start(self) -> None:
        """Supervised steps on correct answers (cross-entropy on response tokens) before RL."""
        cfg = self.config
        opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.warm_start_lr)
        p = self.task.prompt_len
        for _ in range(cfg.warm_start_steps):
            batch = self.task.sample(cfg.prompts_per_rollout * cfg.group_size, self.generator)
            answers = self.task.answers(batch)
            tokens = torch.cat([batch.prompts, answers], dim=1)
            logits = self.model(tokens).logits[:, p - 1 : -1]
            mask = self.task.response_mask(answers)
            ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), answers.reshape(-1), reduction="none")
            loss = (ce * mask.reshape(-1)).sum() / mask.sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    def _summary(self, rollouts: int, wall_s: float) -> TrainSummary:
        h = self.history
        window = max(1, min(20, len(h) // 2))
        rewards = [e.reward for e in h]
        stds = [e.ratio_std for e in h if math.isfinite(e.ratio_std)]
        first, last = _mean(rewards[:window]), _mean(rewards[-window:])
        return TrainSummary(
            algo=self.config.algo,
            preset=self.config.preset,
            seed=self.config.seed,
            steps=len(h),
            rollouts=rollouts,
            window=window,
            reward_first=first,
            reward_last=last,
            reward_gain=last - first,
            entropy_first=_mean([e.entropy for e in h[:window]]),
            entropy_last=_mean([e.entropy for e in h[-window:]]),
            ratio_std_max=max(stds) if stds else math.nan,
            ratio_std_last=_mean([e.ratio_std for e in h[-window:]]),
            nonfinite_steps=sum(not (math.isfinite(e.loss) and math.isfinite(e.grad_norm)) for e in h),
            skipped_steps=sum(e.skipped for e in h),
            wall_s=wall_s,
            history=list(h),
        )


_PLAIN = (bool, int, float, str, type(None))


def _config_dict(cfg: TrainConfig) -> dict[str, Any]:
    """``cfg.to_dict()``, fast for the usual flat config of plain values (``asdict`` deep-copies each
    field, a noticeable share of an observer call at small presets)."""
    values = vars(cfg)
    if len(values) == len(dataclasses.fields(cfg)) and all(type(v) in _PLAIN for v in values.values()):
        return dict(values)
    return cfg.to_dict()
