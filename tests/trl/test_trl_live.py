"""TRL GRPOTrainer runs attached to a live service: what arrives, and that it is right.

Every test trains the ~1M-parameter model from ``tinyrl`` for a few optimizer steps on the CPU.
"""

from __future__ import annotations

import gc
import logging
import math
import os
import subprocess
import sys
import weakref
from pathlib import Path

import pytest
import torch
import trl
from sapo_monitor.client.adapters.trl import MIRROR_KEYS, MIRROR_PREFIX, adapter_for
from sapo_monitor.client.stats import compute_step_stats
from transformers import TrainerCallback

from sapo_monitor import client
from tests.trl.capture import Recorder, concat_step, trl_sapo_gate_mean
from tests.trl.tinyrl import make_trainer

GATE_AND_SIGN = (
    "gate.weight_mean", "gate.value_mean", "gate.saturated_frac",
    "sign.pos.token_frac", "sign.neg.token_frac", "sign.zero.token_frac",
    "sign.pos.ratio_mean", "sign.neg.ratio_mean", "sign.pos.grad_share", "sign.neg.grad_share",
)
QUANTILE_KEYS = {"log_ratio.p01", "log_ratio.p05", "log_ratio.p50", "log_ratio.p95", "log_ratio.p99"}


def _train_attached(tmp_path, service, run_id, *, before_attach=None, after_attach=None, **overrides):
    trainer = make_trainer(tmp_path, **overrides)
    if before_attach is not None:
        before_attach(trainer)
    monitor = client.attach(trainer, run=run_id, project="trl-tests", server=service.url,
                            spool_dir=tmp_path / "spool", strict=True)
    recorder = Recorder(monitor)
    if after_attach is not None:
        after_attach(trainer)
    trainer.train()
    monitor.close(timeout=30)
    return trainer, recorder


def _logged(trainer, key):
    """TRL's log_history value of ``key`` per optimizer step (logging_steps=1)."""
    return {h["step"]: h[key] for h in trainer.state.log_history if key in h and "train_runtime" not in h}


def _assert_matches_reference(stored: dict[str, float], reference: dict, *, quantile_tol: float = 0.0):
    for name, value in reference.items():
        if name == "hist.log_ratio":
            continue
        assert name in stored, f"{name} missing from the stored step"
        tol = quantile_tol if name in QUANTILE_KEYS else 0.0
        assert stored[name] == pytest.approx(value, rel=1e-9, abs=max(tol, 1e-12)), name


def test_sapo_with_two_iterations(tmp_path, service):
    """SAPO, num_iterations=2: every step arrives once, ratios leave 1, values are the catalogue's."""
    trainer, rec = _train_attached(tmp_path, service, "trl-sapo-it2", num_iterations=2, max_steps=6)
    steps = service.steps("trl-sapo-it2")
    assert sorted(steps) == [1, 2, 3, 4, 5, 6]
    assert sorted(rec.steps) == [1, 2, 3, 4, 5, 6] and all(len(mbs) == 1 for mbs in rec.steps.values())

    run = service.run("trl-sapo-it2")
    assert run["algorithm"] == "sapo"
    assert run["tags"]["ratio_source"] == "old_logps" and run["tags"]["trainer"] == "trl"
    assert run["tags"]["trl_version"] == trl.__version__ and run["tags"]["loss_type"] == "sapo"
    assert run["config"]["loss_type"] == "sapo" and run["config"]["num_iterations"] == 2

    # the second pass over each rollout batch is off-policy: the ratio leaves 1
    assert max(steps[s]["ratio.std"] for s in steps) > 1e-3
    assert max(steps[s]["log_ratio.abs_max"] for s in steps) > 1e-2

    cfg = adapter_for(trainer).monitor.stats_config
    assert (cfg.tau_pos, cfg.tau_neg) == (trainer.args.sapo_temperature_pos, trainer.args.sapo_temperature_neg)
    losses, lrs, norms = _logged(trainer, "loss"), _logged(trainer, "learning_rate"), _logged(trainer, "grad_norm")
    rewards = _logged(trainer, "reward")
    for step, stored in steps.items():
        for name in GATE_AND_SIGN:
            assert name in stored, f"step {step}: {name} missing"
        batch = concat_step(rec.steps[step])
        reference = compute_step_stats(
            batch["logp_new"], batch["logp_old"], batch["advantages"], batch["mask"], config=cfg,
            entropy=batch["entropy"], rewards=batch["rewards"],
        )
        _assert_matches_reference(stored, reference)
        assert service.histogram("trl-sapo-it2", step) == reference["hist.log_ratio"]
        # TRL's own SAPO gate, recomputed from the same tensors
        gate = trl_sapo_gate_mean(batch, trainer.args.sapo_temperature_pos, trainer.args.sapo_temperature_neg)
        assert stored["gate.value_mean"] == pytest.approx(gate, rel=1e-6)
        # loss, lr and grad norm are what TRL logged for the step
        assert stored["loss"] == pytest.approx(losses[step], rel=1e-7)
        assert stored["lr"] == pytest.approx(lrs[step], rel=1e-12)
        assert stored["grad_norm"] == pytest.approx(norms[step], rel=1e-6)
        # a generation every second step: its reward is TRL's logged reward (float32 there)
        gen_step = step if step % 2 == 1 else step - 1
        assert stored["reward.mean"] == pytest.approx(rewards[gen_step], rel=1e-5)
        # key statistics are mirrored into TRL's logs
        mirrored = {k: v for k, v in trainer.state.log_history[step - 1].items() if k.startswith(MIRROR_PREFIX)}
        assert mirrored == {MIRROR_PREFIX + k: pytest.approx(stored[k]) for k in MIRROR_KEYS if k in stored}


def test_on_policy_ratios_are_exactly_one_and_marked(tmp_path, service, caplog):
    """num_iterations=1: TRL computes no old log-probs; ratio 1 / 0 everywhere, tag and one log line.

    An evaluation pass every step (TRL runs compute_loss there too) adds no record and no micro-batch.
    """
    caplog.set_level(logging.WARNING, logger="sapo_monitor.client.trl")
    trainer, rec = _train_attached(
        tmp_path, service, "trl-sapo-onpolicy", num_iterations=1, max_steps=3,
        eval_strategy="steps", eval_steps=1, per_device_eval_batch_size=4,
    )
    assert trainer.state.log_history and any("eval_loss" in h for h in trainer.state.log_history)
    steps = service.steps("trl-sapo-onpolicy")
    assert sorted(steps) == [1, 2, 3]
    assert [len(rec.steps[s]) for s in (1, 2, 3)] == [1, 1, 1]  # eval micro-batches were not observed
    for stored in steps.values():
        for name in ("ratio.mean", "ratio.min", "ratio.max", "seq_ratio.mean"):
            assert stored[name] == 1.0, name
        for name in ("ratio.std", "log_ratio.mean", "log_ratio.std", "log_ratio.abs_max", "kl.k1", "kl.k3",
                     "clip.token_frac", "seq_ratio.std"):
            assert stored[name] == 0.0, name
        assert stored["gate.weight_mean"] == 1.0
    assert service.run("trl-sapo-onpolicy")["tags"]["ratio_source"] == "on_policy"
    notes = [r.getMessage() for r in caplog.records if "flat" in r.getMessage()]
    assert len(notes) == 1 and "num_iterations" in notes[0]


@pytest.mark.parametrize("accumulation", [2, 4])
def test_gradient_accumulation_one_record_per_optimizer_step(tmp_path, service, accumulation):
    run_id = f"trl-ga{accumulation}"
    trainer, rec = _train_attached(tmp_path, service, run_id, gradient_accumulation_steps=accumulation,
                                   num_iterations=2, max_steps=2)
    steps = service.steps(run_id)
    assert sorted(steps) == [1, 2] == sorted(rec.steps)
    losses = _logged(trainer, "loss")
    for step, stored in steps.items():
        micro = rec.steps[step]
        assert len(micro) == accumulation
        assert stored["tokens.count"] == sum(int(mb["mask"].sum()) for mb in micro)
        assert stored["sequences.count"] == sum(int((mb["mask"].sum(1) > 0).sum()) for mb in micro)
        assert stored["response_len.max"] == max(int(mb["mask"].sum(1).max()) for mb in micro)
        batch = concat_step(micro)
        reference = compute_step_stats(batch["logp_new"], batch["logp_old"], batch["advantages"], batch["mask"],
                                       config=adapter_for(trainer).monitor.stats_config,
                                       entropy=batch["entropy"], rewards=batch["rewards"])
        _assert_matches_reference(stored, reference, quantile_tol=1 / 512)
        assert stored["loss"] == pytest.approx(losses[step], rel=1e-7)


@pytest.mark.parametrize(
    ("overrides", "algorithm"),
    [
        ({"loss_type": "grpo", "importance_sampling_level": "sequence", "epsilon": 3e-4, "epsilon_high": 4e-4},
         "gspo"),
        ({"loss_type": "dapo", "epsilon_high": 0.28}, "grpo"),
    ],
)
def test_algorithm_recorded(tmp_path, service, overrides, algorithm):
    run_id = f"trl-{algorithm}-{overrides['loss_type']}"
    trainer, _ = _train_attached(tmp_path, service, run_id, num_iterations=2, max_steps=2, **overrides)
    run = service.run(run_id)
    assert run["algorithm"] == algorithm
    assert run["config"]["loss_type"] == overrides["loss_type"]
    cfg = adapter_for(trainer).monitor.stats_config
    if algorithm == "gspo":
        assert (cfg.seq_eps_low, cfg.seq_eps_high) == (3e-4, 4e-4)
    else:
        assert cfg.eps_high == pytest.approx(0.28)
    steps = service.steps(run_id)
    assert sorted(steps) == [1, 2]
    assert all("clip.seq_frac" in s and "gate.weight_mean" in s for s in steps.values())
    assert not math.isnan(steps[2]["loss"])


class StorageProbe(TrainerCallback):
    """Weak references to the storage of every current-policy log-prob / entropy tensor TRL makes; at the
    end of each optimizer step all of them must be gone (nobody, the adapter included, kept one)."""

    def __init__(self) -> None:
        self.refs: list[weakref.ref] = []
        self.alive_at_step_end: list[int] = []
        self.calls = 0

    def wrap(self, trainer) -> None:
        original = trainer._get_per_token_logps_and_entropies

        def probed(*args, **kwargs):
            out = original(*args, **kwargs)
            if torch.is_grad_enabled():  # the policy's own forward inside compute_loss
                self.calls += 1
                self.refs += [weakref.ref(t.untyped_storage()) for t in out[:2] if t is not None]
            return out

        trainer._get_per_token_logps_and_entropies = probed

    def on_step_end(self, args, state, control, **kwargs):
        gc.collect()
        self.alive_at_step_end.append(sum(ref() is not None for ref in self.refs))


def test_attaching_does_not_change_training(tmp_path, service):
    """Same seed, with and without attach: identical logs (losses, grad norms, KL, ...) and final weights.

    beta != 0 also exercises TRL's reference-model log-probs (which must not be mistaken for the
    policy's). No tensor of TRL's survives a step in the adapter: checked on storage weak references,
    with the bare run as the control that TRL itself frees them.
    """
    overrides = dict(num_iterations=2, gradient_accumulation_steps=2, max_steps=4, beta=0.04)
    bare = make_trainer(tmp_path / "bare", **overrides)
    bare_probe = StorageProbe()
    bare_probe.wrap(bare)
    bare.add_callback(bare_probe)
    bare.train()
    probe = StorageProbe()
    attached, _ = _train_attached(tmp_path / "attached", service, "trl-unchanged", before_attach=probe.wrap,
                                  after_attach=lambda t: t.add_callback(probe), **overrides)
    assert bare_probe.alive_at_step_end == [0, 0, 0, 0]
    assert probe.calls == 8 and probe.alive_at_step_end == [0, 0, 0, 0]

    def history(t):
        return [{k: v for k, v in h.items() if not k.startswith(MIRROR_PREFIX) and k not in
                 ("step_time", "train_runtime", "train_samples_per_second", "train_steps_per_second")}
                for h in t.state.log_history]

    assert history(bare) == history(attached)
    for (name, a), (_, b) in zip(bare.model.state_dict().items(), attached.model.state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name
    assert sorted(service.steps("trl-unchanged")) == [1, 2, 3, 4]
    # the KL term was live, and the captured policy log-probs are not the reference model's
    assert all("kl" in h for h in attached.state.log_history[:4])
    adapter = adapter_for(attached)
    assert adapter._captured is None and adapter._loss_sum is None and adapter._grad_norm is None
    assert adapter.monitor._acc.empty
    assert not [v for v in vars(adapter).values() if isinstance(v, torch.Tensor)]


def test_example_runs_offline_against_the_service(service):
    """examples/trl_sapo.py trains and streams a run with nothing but this machine."""
    example = Path(__file__).resolve().parents[2] / "examples" / "trl_sapo.py"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, str(example), "--server", service.url, "--run", "trl-example", "--steps", "3"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "trained 3 steps" in done.stdout
    assert sorted(service.steps("trl-example")) == [1, 2, 3]
    assert service.run("trl-example")["algorithm"] == "sapo"
