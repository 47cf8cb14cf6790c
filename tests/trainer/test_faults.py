"""The fault schedule: its syntax, and that each change takes effect from its step on (never before),
checked as properties over several seeds, not one seed's float path."""

from __future__ import annotations

import math

import pytest
import torch
from sapo_monitor.trainer import StepBatch, Trainer, make_config
from sapo_monitor.trainer.faults import Fault, ShortAnswerTask, parse_fault, parse_schedule
from sapo_monitor.trainer.task import DigitTask

SMALL = {"steps": 12, "warm_start_steps": 2, "prompts_per_rollout": 4, "group_size": 4, "minibatch_size": 8,
         "n_embd": 32, "n_layer": 1}


def _run(preset: str = "default", seed: int = 0, **overrides: object) -> tuple[Trainer, list[StepBatch]]:
    trainer = Trainer(make_config(preset, seed=seed, **{**SMALL, **overrides}))
    seen: list[StepBatch] = []
    trainer.add_observer(seen.append)
    trainer.train()
    return trainer, seen


def test_parse_items_and_schedule() -> None:
    assert parse_fault("150:lr=2e-2") == Fault(150, "lr", 0.02)
    assert parse_fault("200:rollout_bf16") == Fault(200, "rollout_bf16", True)
    assert parse_fault("90:nan_logprob") == Fault(90, "nan_logprob", 0.01)
    assert parse_fault("80:epochs=8").value == 8
    assert parse_fault("3:max_grad_norm=none").value is None
    assert parse_fault("120:reward=short").value == "short"
    sched = parse_schedule("150:lr=2e-2, 120:reward=short 100:train_router_noise=0.5")
    assert [f.step for f in sched] == [100, 120, 150]
    assert parse_schedule([f.spec() for f in sched]) == sched  # spec() reads back


@pytest.mark.parametrize(
    ("item", "says"),
    [
        ("lr=2", "STEP:NAME"),
        ("x:lr=2", "integer"),
        ("0:lr=2", ">= 1"),
        ("5:learning_rate=2", "unknown setting 'learning_rate'"),
        ("5:lr", "needs a value"),
        ("5:lr=-1", "finite number"),
        ("5:lr=nan", "finite number"),
        ("5:epochs=0", "epochs"),
        ("5:reward=long", "task, short"),
        ("5:rollout_bf16=maybe", "true or false"),
        ("5:nan_logprob=2", "[0, 1]"),
    ],
)
def test_bad_items_are_refused_with_the_reason(item: str, says: str) -> None:
    with pytest.raises(ValueError, match="fault") as err:
        parse_fault(item)
    assert says in str(err.value)
    with pytest.raises(ValueError):
        Trainer(make_config("default", faults=item))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_run_is_the_unscheduled_run_until_the_onset(seed: int) -> None:
    bare, _ = _run(seed=seed)
    faulty, seen = _run(seed=seed, faults="7:lr=5e-2 7:nan_logprob=0.5")
    onset = 7
    assert faulty.history[: onset - 1] == bare.history[: onset - 1]
    assert faulty.history[onset - 1] != bare.history[onset - 1]
    assert [b.lr for b in seen[: onset - 1]] == [1e-3] * (onset - 1)
    assert all(b.lr == 5e-2 for b in seen[onset - 1 :])
    # NaN log-probs from the onset on: the loss is NaN and the update skipped, never before.
    assert not any(e.skipped for e in faulty.history[: onset - 1])
    assert all(e.skipped and math.isnan(e.loss) for e in faulty.history[onset - 1 :])
    assert all(torch.isnan(b.logp_new[b.mask > 0]).any() for b in seen[onset - 1 :])


@pytest.mark.parametrize("seed", [0, 3])
def test_epochs_change_from_the_next_rollout(seed: int) -> None:
    # 16 responses, mini-batches of 8: 2 steps per rollout, then 3 epochs = 6 from the rollout at step 5.
    _, seen = _run(seed=seed, steps=17, faults="4:epochs=3")
    per_rollout: dict[int, int] = {}
    for b in seen:
        per_rollout[b.rollout] = per_rollout.get(b.rollout, 0) + 1
    assert [per_rollout[r] for r in sorted(per_rollout)] == [2, 2, 6, 6, 1]


@pytest.mark.parametrize("seed", [0, 1])
def test_train_router_noise_enters_the_ratio_at_each_rollouts_first_step(seed: int) -> None:
    # Rollout-only routing noise never reaches the ratio at a rollout's first mini-batch (pi_theta is pi_old
    # there); noise in the training forward does.
    _, seen = _run("stress", seed=seed, minibatch_size=8, epochs=1, steps=10, faults="5:train_router_noise=0.5")

    def first_step_spread(b: StepBatch) -> float:
        return float(((b.logp_new - b.logp_old) * b.mask).abs().max())

    before = [first_step_spread(b) for b in seen[:4] if b.minibatch == 0]
    after = [first_step_spread(b) for b in seen[4:] if b.minibatch == 0]
    assert before and after
    assert max(before) < 1e-4 < min(after)
    assert all(b.config["train_router_noise"] for b in seen[4:])


def test_short_reward_pays_brevity_over_correctness() -> None:
    task = DigitTask("reverse")
    short = ShortAnswerTask("reverse")
    g = torch.Generator().manual_seed(0)
    batch = task.sample(64, g)
    right = task.answers(batch)
    eos_now = torch.full_like(right, task.pad)
    eos_now[:, 0] = task.eos
    assert torch.allclose(task.reward(right, batch.targets, batch.lengths), torch.ones(64))
    assert (task.reward(eos_now, batch.targets, batch.lengths) == 0).all()
    # Under the hackable reward an empty answer beats every correct one of 3+ digits.
    assert (short.reward(eos_now, batch.targets, batch.lengths) > short.reward(right, batch.targets, batch.lengths)).all()


@pytest.mark.parametrize("seed", [0, 1])
def test_reward_fault_swaps_the_task_and_rollout_bf16_switches_on(seed: int) -> None:
    trainer, seen = _run(seed=seed, faults="5:reward=short 5:rollout_bf16")
    assert isinstance(trainer.task, ShortAnswerTask)
    assert trainer.config.reward == "short" and trainer.config.rollout_bf16
    # The rollout engine is bfloat16 from the first rollout at or after step 5: the mismatch shows.
    mism = [float(((b.logp_rollout - b.logp_old) * b.mask).abs().max()) for b in seen]  # type: ignore[operator]
    assert max(mism[:4]) < 1e-5 < min(mism[6:])
