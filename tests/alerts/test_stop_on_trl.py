"""``stop_on`` with TRL: a matching alert makes TRL save a checkpoint through its own save path and stop."""

from __future__ import annotations

import httpx
import pytest
from sapo_monitor.client.settings import ClientSettings

from sapo_monitor import client
from tests.alerts.server import live_service
from tests.trl.tinyrl import make_trainer


@pytest.mark.slow
def test_trl_saves_a_checkpoint_and_stops_on_a_critical_alert(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with live_service(f"sqlite:///{tmp_path}/trl.db") as base, httpx.Client(base_url=base, timeout=20) as c:
        # A rule that holds on every step: the first delivered step fires it.
        r = c.post("/api/v1/rules", json={"id": "always", "kind": "threshold", "severity": "critical",
                                          "params": {"metric": "loss", "op": ">", "value": -1e30}})
        assert r.status_code == 201, r.text
        trainer = make_trainer(tmp_path / "out", max_steps=40)
        settings = ClientSettings(spool_dir=tmp_path / "spool", flush_interval=0.05, max_backoff=0.2, timeout=5.0)
        mon = client.attach(trainer, run="trl-stop", server=base, settings=settings, stop_on="critical")
        trainer.train()
        mon.close(timeout=20)
    step = trainer.state.global_step
    assert mon.alert_watch.stop_alert is not None and mon.alert_watch.stop_alert.rule == "always"
    assert 1 <= step < 40
    assert (tmp_path / "out" / f"checkpoint-{step}").is_dir()
