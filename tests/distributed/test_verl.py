"""verl 0.9 on 2 gloo processes at the loss-function level, through verl's own code (``verl_rank.py`` says
which parts are verl's and which stand in for its GPU engine): the adapter's wrapped policy loss and
optimizer-step hook give rank 0 one record per optimizer step covering both ranks' tokens, and training
is unchanged.

verl's full dependency set (CUDA torch, Ray's extras, an older transformers) must not enter the test
environment, so verl and the light modules its import chain needs are installed without dependencies
into ``build/verl-site`` (``SAPO_MONITOR_VERL_SITE`` points elsewhere; a verl importable directly is
used as is) and only the rank processes put it on their path. ~25 s: two processes import verl (torch,
tensordict, ray, datasets) on this 2-core machine."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch
from sapo_monitor.client.stats import StatsConfig, compute_step_stats

from tests.client.test_stats import assert_matches
from tests.distributed.ranks import run_ranks
from tests.distributed.test_ranks import records, stats_only
from tests.distributed.verl_rank import STEPS, verl_worker

ROOT = Path(__file__).resolve().parents[2]
SITE = Path(os.environ.get("SAPO_MONITOR_VERL_SITE", ROOT / "build" / "verl-site"))
INSTALL = "make verl-site"


def verl_site() -> str:
    if importlib.util.find_spec("verl") is not None:
        return ""
    if not (SITE / "verl" / "trainer" / "ppo" / "core_algos.py").exists():
        pytest.fail(f"verl is not installed: {INSTALL} (part of make install-test) puts it, without its "
                    f"dependencies, in {SITE}")
    return str(SITE)


def test_verl_two_ranks_one_merged_record_per_optimizer_step(receiver, tmp_path):
    results = run_ranks(verl_worker, 2, tmp_path, timeout=240, site=verl_site(), server=receiver.url)
    assert None not in results, run_ranks.exitcodes  # type: ignore[attr-defined]
    r0, r1 = results
    assert [r0["rank"], r1["rank"]] == [0, 1]
    assert [r0["spool"], r1["spool"]] == [True, False]  # the peer keeps no spool
    # The configured loss ran unchanged: same gradients, same parameters as without the adapter.
    for r in results:
        assert r["norms"] == r["bare_norms"] and r["same_params"]
    assert r0["norms"] == r1["norms"]  # one data-parallel step on both ranks
    # The thresholds of the loss verl optimised (its ActorConfig), not the defaults.
    assert r0["algo"] == "sapo" and r0["stats_config"] == [1.0, 1.05, 0.2, 0.28]
    cfg = StatsConfig(eps_high=0.28)

    got = records(receiver, "verl-dp")
    assert sorted(got) == list(range(1, STEPS + 1))  # exactly one record per optimizer step
    for step, rec in got.items():
        assert (rec["ranks_reporting"], rec["ranks_total"]) == (2, 2)
        assert rec["grad_norm"] == pytest.approx(r0["norms"][step - 1], rel=1e-12)
        parts = [torch.load(tmp_path / f"r{r}-s{step}.pt") for r in range(2)]
        whole = compute_step_stats(config=cfg, **{k: torch.cat([p[k] for p in parts]) for k in parts[0]})
        assert_matches({k: v for k, v in stats_only(rec).items() if k not in ("grad_norm", "lr")}, whole,
                       exact_quantiles=True)


def test_thresholds_and_algorithm_from_the_actor_config():
    from types import SimpleNamespace

    from sapo_monitor.client.adapters.verl import algo_for, stats_config_for

    def actor(mode: str, **fields: float | None) -> SimpleNamespace:  # ActorConfig's fields that are read
        return SimpleNamespace(policy_loss={"loss_mode": mode}, **fields)

    assert algo_for(actor("vanilla")) == "grpo" and algo_for(actor("dro")) == "dro"
    grpo = stats_config_for(actor("vanilla", clip_ratio=0.25, clip_ratio_low=None, clip_ratio_high=0.3))
    assert (grpo.eps_low, grpo.eps_high) == (0.25, 0.3)
    gspo = stats_config_for(actor("gspo", clip_ratio_low=3e-4, clip_ratio_high=4e-4, tau_pos=2.0))
    assert (gspo.seq_eps_low, gspo.seq_eps_high, gspo.eps_low, gspo.tau_pos) == (3e-4, 4e-4, 0.2, 2.0)
