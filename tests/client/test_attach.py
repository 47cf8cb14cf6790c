"""``client.attach`` on the bundled trainer, end to end, and the adapter registry."""

from __future__ import annotations

import time

import httpx
import pytest
from sapo_monitor.client.adapters import find_adapter, register_adapter, supported_types
from sapo_monitor.client.errors import AdapterNotFoundError
from sapo_monitor.client.upload import upload_spool
from sapo_monitor.trainer.train import Trainer, make_config

from sapo_monitor import client
from tests.client.service import LiveService


@pytest.fixture(scope="module")
def live_service(tmp_path_factory):
    """The real service (uvicorn subprocess, temporary SQLite), shared by this module's tests."""
    service = LiveService(tmp_path_factory.mktemp("service")).start()
    yield service
    service.kill()


def small_trainer(steps: int, **overrides) -> Trainer:
    cfg = dict(steps=steps, warm_start_steps=0, prompts_per_rollout=4, group_size=4, minibatch_size=8, epochs=2)
    cfg.update(overrides)
    return Trainer(make_config("default", **cfg))


def read_steps(url: str, run_id: str) -> list[int]:
    """Steps stored by the service for ``run_id``, as its series API reports them."""
    doc = httpx.get(f"{url}/api/v1/runs/{run_id}/series", params={"metric": "loss"}, timeout=5).json()
    return doc["series"]["loss"]["step"]


def test_attach_to_an_unknown_trainer_names_the_supported_types():
    with pytest.raises(AdapterNotFoundError) as err:
        client.attach(object(), run="x")
    assert "builtins.object" in str(err.value)
    assert "sapo_monitor.trainer.train.Trainer" in str(err.value)


class _Base:
    pass


class _Child(_Base):
    pass


def test_registry_matches_subclasses_through_the_mro():
    calls = []
    register_adapter(f"{__name__}._Base", lambda trainer, **kw: calls.append((trainer, kw)) or "monitor")
    try:
        child = _Child()
        assert client.attach(child, run="r") == "monitor" and calls == [(child, {"run": "r"})]
        assert f"{__name__}._Base" in supported_types()
    finally:
        from sapo_monitor.client import adapters

        adapters._REGISTRY.pop(f"{__name__}._Base")


def test_bundled_trainer_adapter_is_found_lazily():
    assert find_adapter(small_trainer(1)).__name__ == "attach_trainer"


def test_attach_survives_a_receiver_outage_and_says_so_once(receiver, fast_settings, caplog):
    """Stop a loopback receiver at step 4, bring it back at step 10: the whole run arrives, once."""
    trainer = small_trainer(16)
    mon = client.attach(trainer, run="attach-1", project="demo", server=receiver.url, settings=fast_settings)

    def chaos(entry) -> None:
        if entry.step == 4:
            receiver.stop()
        if entry.step == 10:
            time.sleep(0.3)  # let a few retries fail
            receiver.start()  # same port, same store

    trainer.train(progress=chaos)
    mon.close(timeout=15)
    steps = read_steps(receiver.url, "attach-1")
    assert steps == list(range(1, 17)), steps  # every step, each once
    assert receiver.runs["attach-1"]["status"] == "finished"
    assert receiver.runs["attach-1"]["algorithm"] == "sapo" and receiver.runs["attach-1"]["config"]["steps"] == 16
    record = receiver.steps["attach-1"][16]
    assert {"ratio.std", "gate.weight_mean", "sign.neg.grad_share", "reward.mean", "entropy.mean"} <= set(
        record["metrics"])
    assert len(record["histograms"]["log_ratio"]) == 42
    assert not list((mon.spool_dir / "batches").glob("*"))
    messages = [r.getMessage() for r in caplog.records]
    assert any("cannot deliver run attach-1" in m for m in messages), "the outage did not happen"
    assert any("delivery of run attach-1 resumed" in m for m in messages)


def test_attach_delivers_every_step_to_the_live_service_killed_mid_run(live_service, fast_settings, caplog):
    """The real service is SIGKILLed at step 4 and started again (same port, same database) at step 10:
    every step of the run is stored, each once, and the run ends marked finished."""
    trainer = small_trainer(16)
    mon = client.attach(trainer, run="live-1", project="demo", server=live_service.url, settings=fast_settings)
    killed = []

    def chaos(entry) -> None:
        if entry.step == 4:
            live_service.kill()
            killed.append(entry.step)
        if entry.step == 10:
            live_service.start()

    trainer.train(progress=chaos)
    mon.close(timeout=30)
    assert killed == [4]
    steps = live_service.steps("live-1")
    assert steps == list(range(1, 17)), steps  # complete, in order, no step twice
    run = live_service.run("live-1")
    assert run["status"] == "finished" and run["algorithm"] == "sapo" and run["project"] == "demo"
    assert (run["first_step"], run["last_step"]) == (1, 16)
    values = live_service.step_metrics("live-1", 16, ["ratio.std", "gate.weight_mean", "tokens.count"])
    assert values["tokens.count"] > 0 and 0 < values["gate.weight_mean"] <= 1
    hist = httpx.get(f"{live_service.url}/api/v1/runs/live-1/histogram", timeout=10).json()
    finite_tokens = sum(live_service.series("live-1", "tokens.count")["value"]) - sum(
        live_service.series("live-1", "nonfinite.token_count")["value"])
    assert hist["steps"] == 16 and len(hist["counts"]) == 42 and sum(hist["counts"]) == finite_tokens
    assert any("cannot deliver run live-1" in r.getMessage() for r in caplog.records), "no outage happened"
    assert not list((mon.spool_dir / "batches").glob("*"))


def test_attach_offline_then_upload_to_the_live_service(live_service, fast_settings):
    trainer = small_trainer(6, moe=True)
    mon = client.attach(trainer, run="live-2", settings=fast_settings)  # no server: spool only
    trainer.train()
    mon.close()
    result = upload_spool(mon.spool_dir, live_service.url)
    assert result.ok and result.steps_sent == 6
    assert live_service.steps("live-2") == list(range(1, 7))
    assert "moe.route_flip_frac" in live_service.step_metrics("live-2", 6, ["moe.route_flip_frac"])
    assert live_service.run("live-2")["status"] == "finished"
    assert upload_spool(mon.spool_dir, live_service.url).steps_sent == 0
    assert live_service.steps("live-2") == list(range(1, 7))


def test_attach_does_not_change_training(fast_settings):
    bare = small_trainer(4)
    bare.train()
    watched = small_trainer(4)
    mon = client.attach(watched, run="attach-3", settings=fast_settings)
    watched.train()
    mon.close()
    assert [e.loss for e in bare.history] == [e.loss for e in watched.history]


def test_cli_train_with_spool_then_upload(live_service, tmp_path, monkeypatch):
    """`sapo-monitor train --spool DIR` (through client.attach) then `sapo-monitor upload DIR --server URL`."""
    from typer.testing import CliRunner

    from sapo_monitor.cli.main import app

    monkeypatch.delenv("SAPO_MONITOR_SERVER", raising=False)
    spool = tmp_path / "spool"
    runner = CliRunner()
    args = ["train", "--steps", "4", "--prompts", "4", "--group-size", "4", "--minibatch-size", "8",
            "--warm-start", "0", "--run", "cli-run", "--spool", str(spool)]
    trained = runner.invoke(app, args)
    assert trained.exit_code == 0, trained.output
    uploaded = runner.invoke(app, ["upload", str(spool), "--server", live_service.url])
    assert uploaded.exit_code == 0, uploaded.output
    assert live_service.steps("cli-run") == [1, 2, 3, 4]
    assert live_service.run("cli-run")["status"] == "finished"
