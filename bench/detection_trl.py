"""The TRL part of the detection corpus: tiny Hugging Face ``GRPOTrainer`` runs, recorded like the rest.

Each run is the tests' offline tiny model (``tests/trl/tinyrl.py``: a random ~1M-parameter Llama, a
character tokenizer) on a task of its own that is not solved within a run: all 100 prompts "a+b=" with
a, b in 0-9, rewarded by ``reward_close`` (the share of digits in the answer plus how close its number
is to a + b, ``1 - |n - (a+b)| / 10``). The tests' task (10 distinct prompts, exact-answer reward) is
solved within about 30 steps: the policy then answers with one token deterministically, its entropy
ends at 15-30 % of its start and nearly every group has no reward spread, so a "healthy" run of it was
a finished one whose entropy had truly collapsed. On this task the reward keeps rising slowly for 100
steps and the entropy settles near half its start, as in a real RL run that goes on learning.

The model is warm-started by 60 supervised steps (``warm_start``: RL starts from a sharp, partly right
policy, as a real one does, not from the uniform entropy of random weights), then trained by TRL's own
``GRPOTrainer`` (lr 3e-4, 4 prompts x 4 completions of up to 8 tokens a step) with
``client.attach`` spooling to ``<cache>/spool/<run_id>`` (no server), so ``bench/detection.py`` reads,
relabels and replays it exactly like a bundled-trainer run. Two configurations (``TRL_ALGOS``):

* ``grpo``: TRL's GRPO loss, ``num_iterations=1`` (on-policy: every ratio is exactly 1);
* ``sapo``: TRL's SAPO loss, ``num_iterations=2`` (two updates per rollout, so ratios move).

Unfaulted runs are labelled healthy or collapse by the same hindsight rule as every other run.
One fault kind, ``trl_lr``: a ``TrainerCallback`` multiplies the learning rate (and the scheduler's
base rates, so the linear decay goes on from the new level) at the scheduled step; onset = that step,
as for the bundled trainer's ``--at N:lr=...``.

Cost: about 0.3-0.6 s a step on the shared 2-core machine, so a 100-step run is a minute or less.
The cache knows a run by its id (and a fault run by its schedule): after changing the configuration
here, delete the ``trl-*`` / ``fault-trl_lr-*`` runs from the cache so they are trained again.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

from detection_corpus import Label, RunPlan, read_steps, relabel

__all__ = ["PAIRS", "TRL_ALGOS", "TRL_FAULT", "TRL_PRESET", "LrJump", "plan_trl", "record_trl_run", "reward_close",
           "warm_start"]

REPO = Path(__file__).resolve().parent.parent
TRL_PRESET = "trl"
# algo -> GRPOConfig overrides on top of tinyrl.grpo_args
TRL_ALGOS: dict[str, dict[str, Any]] = {
    "grpo": {"loss_type": "grpo", "num_iterations": 1},
    "sapo": {"loss_type": "sapo", "num_iterations": 2},
}
# Four prompts of four completions per step: with one or two a step the 10-step reward mean is so noisy
# that the hindsight rule "sees" reversals in runs that learn. lr 3e-4: at 1e-3 the reward stops rising by
# step ~40 and the policy turns deterministic (entropy at 20-30 % of its start on 5 of 6 seeds, which
# entropy_collapse rightly calls a collapse); at 3e-4 it keeps 55-70 % of its start over 100 steps.
SHAPE: dict[str, Any] = {"per_device_train_batch_size": 16, "num_generations": 4, "max_completion_length": 8,
                         "learning_rate": 3e-4}
WARM_STEPS = 60  # supervised steps before RL (warm_start)
TRL_FAULT = ("trl_lr", 20.0)  # fault kind, learning-rate factor at onset (3e-4 -> 6e-3)
PAIRS = tuple((a, b) for a in range(10) for b in range(10))  # the task's prompts: "a+b="


def task_dataset() -> Any:
    """The 100 prompts "a+b=" with their sums in the ``answer`` column (passed to the reward)."""
    from datasets import Dataset

    return Dataset.from_list([{"prompt": f"{a}+{b}=", "answer": str(a + b)} for a, b in PAIRS])


def reward_close(completions: list[str], answer: list[str], **_: Any) -> list[float]:
    """Dense reward that keeps paying for progress: the share of digits, plus ``1 - |n - answer| / 10`` for
    the number ``n`` the answer starts with (0 when it starts with no number or one of 4+ digits)."""
    out = []
    for text, ans in zip(completions, answer, strict=True):
        digits = sum(c.isdigit() for c in text) / max(len(text), 1)
        head = text.strip()
        number = head[: next((i for i, c in enumerate(head) if not c.isdigit()), len(head))]
        close = max(0.0, 1.0 - abs(int(number) - int(ans)) / 10) if 0 < len(number) < 4 else 0.0
        out.append(digits + close)
    return out


def plan_trl(seeds: int, steps: int) -> list[RunPlan]:
    """``seeds`` unfaulted runs of each TRL configuration, and ``seeds`` lr-jump runs (algorithm rotating)."""
    plans = [RunPlan(f"trl-{algo}-s{seed}", TRL_PRESET, algo, seed, steps, "matrix")
             for algo in TRL_ALGOS for seed in range(seeds)]
    name, factor = TRL_FAULT
    algos = list(TRL_ALGOS)
    for seed in range(seeds):
        algo = algos[seed % len(algos)]
        onset = int(steps * (0.4 + 0.2 * (seed % 3) / 2))
        plans.append(RunPlan(f"fault-{name}-{algo}-s{seed}", TRL_PRESET, algo, seed, steps, f"fault:{name}",
                             f"{onset}:lr*{factor:g}", onset))
    return plans


class LrJump:
    """Multiplies the learning rate from optimizer step ``at_step`` (1-based, as the spool numbers steps) on.

    The ``on_step_begin`` of a ``transformers.TrainerCallback`` (mixed in by ``record_trl_run``; kept apart
    so it can be checked without importing transformers)."""

    def __init__(self, at_step: int, factor: float) -> None:
        self.at_step, self.factor = at_step, factor

    def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if state.global_step != self.at_step - 1:
            return
        scheduler, optimizer = kw.get("lr_scheduler"), kw["optimizer"]
        if scheduler is not None and hasattr(scheduler, "base_lrs"):  # else the next scheduler step undoes it
            scheduler.base_lrs = [b * self.factor for b in scheduler.base_lrs]
        for group in optimizer.param_groups:
            group["lr"] *= self.factor


def warm_start(model: Any, tokenizer: Any, seed: int, steps: int = WARM_STEPS) -> None:
    """A short supervised pass on "a+b=" -> an answer that is right half the time (else a number 0-18).

    A random-weight model starts RL at the uniform entropy (ln 43 = 3.8 nats), so any learning takes the
    entropy below a fraction of its start; a real RL run starts from a trained policy, already sharp and
    partly right. This gives the tiny model such a start in a few seconds.
    """
    import random

    import torch

    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        texts = [f"{a}+{b}=" + (str(a + b) if rng.random() < 0.5 else str(rng.randrange(19)))
                 for a, b in rng.sample(PAIRS, 16)]
        ids = [tokenizer(t)["input_ids"] + [tokenizer.eos_token_id] for t in texts]
        width = max(map(len, ids))
        x = torch.tensor([row + [tokenizer.pad_token_id] * (width - len(row)) for row in ids])
        labels = x.masked_fill(x == tokenizer.pad_token_id, -100)
        loss = model(input_ids=x, attention_mask=(labels != -100).long(), labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.zero_grad(set_to_none=True)


def record_trl_run(plan: RunPlan, cache: Path) -> Label:
    """Train one planned TRL run with the client spooling under ``cache``; its label."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))  # tests.trl.tinyrl: the offline tiny-model harness
    from sapo_monitor.client import attach
    from transformers import PrinterCallback, TrainerCallback

    from tests.trl import tinyrl

    logging.getLogger("sapo_monitor").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="trl-corpus-") as out:
        trainer = tinyrl.make_trainer(out, seed=plan.seed, max_steps=plan.steps, logging_steps=plan.steps,
                                      dataset=task_dataset(), reward=reward_close, **SHAPE, **TRL_ALGOS[plan.algo])
        warm_start(trainer.model, trainer.processing_class, plan.seed, WARM_STEPS)
        trainer.remove_callback(PrinterCallback)  # its per-log prints would interleave with the bench's table
        if plan.kind.startswith("fault:"):
            assert plan.onset is not None
            trainer.add_callback(type("LrJumpCallback", (LrJump, TrainerCallback), {})(plan.onset, TRL_FAULT[1]))
        monitor = attach(trainer, run=plan.run_id, project="detection-corpus", server=None,
                         spool_dir=cache / "spool", tags={"corpus_kind": plan.kind, "trainer": "trl"})
        try:
            trainer.train()
        finally:
            monitor.close()
    # The label from the spooled reward.mean / entropy.mean, as bench/detection.py relabels every run.
    draft = Label(plan.run_id, plan.kind, plan.onset, plan.preset, plan.algo, plan.seed, plan.steps, False,
                  plan.faults, False, None, 0.0, 0.0, 0.0)
    return relabel(draft, read_steps(cache / "spool" / plan.run_id))
