"""The adapter's edges: lazy registry, subclasses, double attach, a loss without per-token log-probs."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
import torch
from sapo_monitor.client.adapters.trl import _REWARD_KEY, TRLLogpsMissingWarning, adapter_for
from trl import GRPOTrainer

from sapo_monitor import client
from tests.trl.capture import Recorder
from tests.trl.tinyrl import make_trainer, reward_digits


def test_registry_does_not_import_trl_for_other_trainers():
    code = (
        "import sys\n"
        "from sapo_monitor import client\n"
        "try:\n"
        "    client.attach(object(), run='x', spool_dir='/tmp/unused')\n"
        "except client.AdapterNotFoundError as exc:\n"
        "    assert 'trl.trainer.grpo_trainer.GRPOTrainer' in str(exc), exc\n"
        "else:\n"
        "    raise SystemExit('attach accepted an object')\n"
        "assert 'trl' not in sys.modules and 'transformers' not in sys.modules, 'trl was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


class FusedLossTrainer(GRPOTrainer):
    """Stands for a fused loss (Liger's in older TRL): compute_loss never calls the per-token helper
    through the instance, so no per-token log-probs are observable."""

    def _compute_loss(self, model, inputs):
        hooked = self.__dict__.pop("_get_per_token_logps_and_entropies", None)
        try:
            return super()._compute_loss(model, inputs)
        finally:
            if hooked is not None:
                self._get_per_token_logps_and_entropies = hooked


def test_missing_logps_warns_once_and_sends_the_rest(tmp_path):
    trainer = make_trainer(tmp_path, trainer_cls=FusedLossTrainer, num_iterations=2, max_steps=3)
    monitor = client.attach(trainer, run="trl-fused", spool_dir=tmp_path / "spool")  # a subclass matches
    rec = Recorder(monitor)
    with pytest.warns(TRLLogpsMissingWarning) as caught:
        trainer.train()
    monitor.close(timeout=10)
    ours = [str(w.message) for w in caught if issubclass(w.category, TRLLogpsMissingWarning)]
    assert len(ours) == 1
    assert "ratio.*" in ours[0] and "use_liger_kernel" in ours[0]
    assert sorted(rec.records) == [1, 2, 3]
    rewards = {h["step"]: h["reward"] for h in trainer.state.log_history if "reward" in h}
    for step, record in rec.records.items():
        assert {"loss", "grad_norm", "lr", "reward.mean", "reward.std"} <= set(record.metrics)
        assert "ratio.mean" not in record.metrics and not record.histograms
        assert record.metrics["reward.mean"] == pytest.approx(rewards[step if step % 2 else step - 1], rel=1e-5)


def test_double_attach_is_refused(tmp_path):
    trainer = make_trainer(tmp_path)
    client.attach(trainer, run="trl-once", spool_dir=tmp_path / "spool").close()
    assert adapter_for(trainer) is not None
    with pytest.raises(client.ConfigError, match="already attached"):
        client.attach(trainer, run="trl-twice", spool_dir=tmp_path / "spool")


class RolloutLogpsTrainer(GRPOTrainer):
    """Stands for a vLLM run: TRL then adds the inference engine's ``sampling_per_token_logps`` to each
    batch. Here they are the old log-probs shifted by a known offset, with one token vLLM "could not
    score" (NaN)."""

    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        old = out["old_per_token_logps"]
        rollout = old - 0.05
        rollout[0, 0] = float("nan")
        out["sampling_per_token_logps"] = rollout
        return out


def test_rollout_logps_give_mismatch_statistics(tmp_path):
    trainer = make_trainer(tmp_path, trainer_cls=RolloutLogpsTrainer, num_iterations=2, max_steps=2)
    monitor = client.attach(trainer, run="trl-rollout", spool_dir=tmp_path / "spool", strict=True)
    rec = Recorder(monitor)
    trainer.train()
    monitor.close(timeout=10)
    for step, record in rec.records.items():
        (micro,) = rec.steps[step]
        rollout = micro["logp_rollout"]
        assert torch.isfinite(rollout).all()  # the NaN token counts as "no mismatch", as in TRL
        m = micro["mask"].bool()
        d = (micro["logp_old"] - rollout)[m]
        assert record.metrics["mismatch.log_ratio_mean"] == pytest.approx(float(d.double().mean()), rel=1e-6)
        assert record.metrics["mismatch.abs_max"] == pytest.approx(0.05, rel=1e-4)


def test_uninstall_restores_the_trainer(tmp_path):
    trainer = make_trainer(tmp_path, max_steps=1)
    own = trainer._calculate_rewards  # an instance attribute set before attach must come back as is
    trainer._calculate_rewards = own
    before = dict(vars(trainer))
    monitor = client.attach(trainer, run="trl-uninstall", spool_dir=tmp_path / "spool")
    assert vars(trainer)["compute_loss"] is not before.get("compute_loss")
    adapter_for(trainer).uninstall()
    for name in ("compute_loss", "training_step", "_get_per_token_logps_and_entropies", "_get_grad_norm"):
        assert name not in vars(trainer), name
    assert vars(trainer)["_calculate_rewards"] is own
    trainer.train()  # trains normally, nothing observed
    monitor.close(timeout=5)
    assert adapter_for(trainer).micro_batches_seen == 0


def test_rewards_follow_their_sequences_through_trl_shuffle(tmp_path):
    """steps_per_generation=2: TRL shuffles the generation batch and splits it over two optimizer steps;
    each observed reward must still be the reward of the sequence it is observed with."""
    trainer = make_trainer(tmp_path, steps_per_generation=2, max_steps=4)
    monitor = client.attach(trainer, run="trl-shuffle", spool_dir=tmp_path / "spool", strict=True)
    adapted = trainer.compute_loss
    seen = []

    def spy(model, inputs, *args, **kwargs):  # outermost: sees the batch as TRL's shuffle left it
        seen.append({k: inputs[k].clone() for k in ("prompt_ids", "completion_ids", "completion_mask",
                                                    _REWARD_KEY)})
        return adapted(model, inputs, *args, **kwargs)

    trainer.compute_loss = spy
    rec = Recorder(monitor)
    trainer.train()
    monitor.close(timeout=10)
    tok = trainer.processing_class
    assert len(seen) == 4
    assert any(b[_REWARD_KEY].unique().numel() > 1 for b in seen)  # rewards differ, so order matters
    for batch, step in zip(seen, sorted(rec.steps), strict=True):
        prompts = tok.batch_decode(batch["prompt_ids"], skip_special_tokens=True)
        completions = [
            tok.decode(ids[mask.bool()], skip_special_tokens=True)
            for ids, mask in zip(batch["completion_ids"], batch["completion_mask"], strict=True)
        ]
        answers = [str(int(p[0]) + int(p[2])) for p in (q.replace(" ", "") for q in prompts)]
        expected = torch.tensor(reward_digits(completions, answers))
        assert torch.allclose(batch[_REWARD_KEY], expected, atol=1e-6), (prompts, completions)
        assert torch.equal(rec.steps[step][0]["rewards"], batch[_REWARD_KEY])


def test_liger_kernel_is_checked_at_attach(tmp_path, caplog, recwarn):
    """TRL 1.16 with use_liger_kernel=True keeps per-token log-probs (layer kernels only): no warning.
    A TRL that routes the loss through Liger's fused GRPO loss (``liger_grpo_loss``) gets one warning
    at attach time, naming what will be missing. (liger-kernel needs a GPU, so nothing trains here.)"""
    caplog.set_level(logging.INFO, logger="sapo_monitor.client.trl")
    layer_only = make_trainer(tmp_path / "a", use_liger_kernel=True)
    client.attach(layer_only, run="trl-liger-layers", spool_dir=tmp_path / "spool").close()
    assert not [w for w in recwarn if issubclass(w.category, TRLLogpsMissingWarning)]
    assert any("layer kernels only" in r.getMessage() for r in caplog.records)

    fused = make_trainer(tmp_path / "b", use_liger_kernel=True)
    fused.liger_grpo_loss = object()  # what older TRL sets when the loss runs in Liger's kernel
    with pytest.warns(TRLLogpsMissingWarning, match=r"ratio\.\*.*use_liger_kernel=False"):
        client.attach(fused, run="trl-liger-fused", spool_dir=tmp_path / "spool").close()
