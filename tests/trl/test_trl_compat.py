"""A TRL that renamed what the adapter hooks into must fail at attach time, naming the name."""

from __future__ import annotations

import pytest
from sapo_monitor.client.adapters import trl_compat

from tests.trl.tinyrl import make_trainer


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    return make_trainer(tmp_path_factory.mktemp("compat"))


def test_installed_trl_matches(trainer):
    assert type(trainer).__module__ + "." + type(trainer).__qualname__ == trl_compat.GRPO_TRAINER_PATH
    assert trl_compat.check_trainer(trainer) == []  # nothing missing on the installed TRL


def test_removed_method_is_named(trainer, monkeypatch):
    monkeypatch.setattr(trainer, "_get_per_token_logps_and_entropies", None, raising=False)
    with pytest.raises(trl_compat.IncompatibleTRLError, match="_get_per_token_logps_and_entropies is missing"):
        trl_compat.check_trainer(trainer)


def test_changed_signature_is_named(trainer, monkeypatch):
    def renamed(model, input_ids, attention_mask, logits_to_keep, batch_size=None, want_entropy=False):
        raise AssertionError("never called")

    monkeypatch.setattr(trainer, "_get_per_token_logps_and_entropies", renamed, raising=False)
    with pytest.raises(trl_compat.IncompatibleTRLError, match="no longer takes compute_entropy"):
        trl_compat.check_trainer(trainer)


def test_missing_config_field_is_named(trainer, monkeypatch):
    monkeypatch.delattr(type(trainer.args), "sapo_temperature_neg", raising=False)
    monkeypatch.delattr(trainer.args, "sapo_temperature_neg", raising=False)
    with pytest.raises(trl_compat.IncompatibleTRLError, match=r"GRPOConfig\.sapo_temperature_neg is missing"):
        trl_compat.check_trainer(trainer)


def test_missing_optional_hook_is_reported_not_raised(trainer, monkeypatch):
    monkeypatch.setattr(trainer, "_get_grad_norm", None, raising=False)
    assert any("grad_norm" in gap for gap in trl_compat.check_trainer(trainer))
