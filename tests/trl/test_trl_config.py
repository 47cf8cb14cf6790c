"""How a GRPOConfig maps to algorithm, StatsConfig fields, run config and the on-policy rule."""

from __future__ import annotations

import json

import pytest
from sapo_monitor.client.adapters import trl_config

from tests.trl.tinyrl import grpo_args


@pytest.mark.parametrize(
    ("overrides", "algorithm"),
    [
        ({"loss_type": "sapo"}, "sapo"),
        ({"loss_type": "grpo"}, "grpo"),
        ({"loss_type": "dapo"}, "grpo"),
        ({"loss_type": "dr_grpo"}, "grpo"),
        ({"loss_type": "bnpo"}, "grpo"),
        ({"loss_type": "cispo"}, "grpo"),
        ({"loss_type": "grpo", "importance_sampling_level": "sequence"}, "gspo"),
        ({"loss_type": "luspo", "importance_sampling_level": "sequence"}, "gspo"),
        ({"loss_type": "sapo", "importance_sampling_level": "sequence"}, "sapo"),
    ],
)
def test_algorithm_from_loss_type(tmp_path, overrides, algorithm):
    assert trl_config.algorithm_for(grpo_args(tmp_path, **overrides)) == algorithm


def test_unknown_loss_type_fails_loudly(tmp_path):
    args = grpo_args(tmp_path)
    args.loss_type = "brand_new_po"
    with pytest.raises(ValueError, match="brand_new_po"):
        trl_config.algorithm_for(args)


def test_stats_config_from_trainer_thresholds(tmp_path):
    sapo = grpo_args(tmp_path, loss_type="sapo", sapo_temperature_pos=0.7, sapo_temperature_neg=1.3, epsilon=0.1)
    assert trl_config.stats_config_kwargs(sapo) == {
        "tau_pos": 0.7, "tau_neg": 1.3, "eps_low": 0.1, "eps_high": 0.1,
    }
    dapo = grpo_args(tmp_path, loss_type="dapo", epsilon=0.2, epsilon_high=0.28)
    assert trl_config.stats_config_kwargs(dapo)["eps_high"] == pytest.approx(0.28)
    gspo = grpo_args(
        tmp_path, loss_type="grpo", importance_sampling_level="sequence", epsilon=3e-4, epsilon_high=4e-4
    )
    kw = trl_config.stats_config_kwargs(gspo)
    assert (kw["seq_eps_low"], kw["seq_eps_high"]) == (3e-4, 4e-4)
    assert "eps_low" not in kw and "eps_high" not in kw  # the token band keeps the monitor's reference


@pytest.mark.parametrize(
    ("ga", "spg", "iters", "old"),
    [(1, None, 1, False), (2, None, 1, False), (1, None, 2, True), (2, None, 2, True), (4, 2, 1, False),
     (2, 4, 1, True)],
)
def test_old_logps_rule_matches_trl(tmp_path, ga, spg, iters, old):
    extra = {} if spg is None else {"steps_per_generation": spg}
    args = grpo_args(tmp_path, gradient_accumulation_steps=ga, num_iterations=iters, **extra)
    assert trl_config.computes_old_logps(args) is old
    if not old:
        note = trl_config.on_policy_explanation(args)
        assert "num_iterations" in note and "ratio_source=on_policy" in note


def test_run_config_is_full_json_without_secrets(tmp_path):
    args = grpo_args(
        tmp_path, hub_token="hf_SECRET123", sapo_temperature_neg=1.05,
        model_init_kwargs={"token": "hf_SECRET456", "dtype": "float32"},
    )
    doc = trl_config.run_config(args)
    text = json.dumps(doc)
    assert "hf_SECRET123" not in text and "hf_SECRET456" not in text
    assert doc["model_init_kwargs"]["dtype"] == "float32"
    assert doc["average_tokens_across_devices"] is args.average_tokens_across_devices  # not a secret
    assert doc["loss_type"] == "sapo" and doc["sapo_temperature_neg"] == 1.05
    assert doc["num_iterations"] == 1 and doc["gradient_accumulation_steps"] == 1
    # every init field of the config is there
    assert set(args.to_dict()) == set(doc)
