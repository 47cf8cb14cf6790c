"""Section 3 of issue 12: the ingest answer carries the run's firing alerts; the client exposes them
(``mon.alerts``, ``on_alert``) and ``stop_on`` stops the bundled trainer after its current step."""

from __future__ import annotations

import logging

import httpx
import pytest
from sapo_monitor.client._alerts import Alert, AlertWatch, parse_stop_on
from sapo_monitor.client.settings import ClientSettings
from sapo_monitor.trainer.train import Trainer, make_config

from sapo_monitor import client
from tests.alerts.server import live_service


def _answer(*alerts: tuple[str, str, str]) -> dict:  # type: ignore[type-arg]
    return {"run_id": "r", "accepted": 1, "alerts": [{"id": i, "rule": r, "severity": s} for i, r, s in alerts]}


def test_stop_on_forms() -> None:
    assert parse_stop_on(None) is None and parse_stop_on("") is None
    assert parse_stop_on("critical") == (frozenset({"critical"}), frozenset())
    assert parse_stop_on("warning") == (frozenset({"warning", "critical"}), frozenset())
    assert parse_stop_on("kl_blowup, nonfinite") == (frozenset(), frozenset({"kl_blowup", "nonfinite"}))


def test_watch_calls_back_once_per_new_alert_and_stops_once(caplog) -> None:  # type: ignore[no-untyped-def]
    watch = AlertWatch("critical")
    seen: list[Alert] = []
    stops: list[Alert] = []
    watch.on_alert(seen.append)
    watch.on_alert(lambda a: 1 / 0)  # a failing callback is logged, the others still run
    watch.on_stop(stops.append)
    with caplog.at_level(logging.WARNING, logger="sapo_monitor"):
        watch.handle(_answer(("a1", "mismatch_kl", "warning")))
        watch.handle(_answer(("a1", "mismatch_kl", "warning"), ("a2", "reward_collapse", "critical")))
        watch.handle(_answer(("a2", "reward_collapse", "critical"), ("a3", "nonfinite", "critical")))
        watch.handle({"run_id": "r"})  # an older service: nothing changes
    assert [a.id for a in seen] == ["a1", "a2", "a3"]
    assert [a.rule for a in stops] == ["reward_collapse"] and watch.stop_alert == stops[0]
    assert [a.id for a in watch.alerts] == ["a2", "a3"]
    assert "reward_collapse" in caplog.text
    late: list[Alert] = []
    watch.on_stop(late.append)  # registered after the decision: told at once
    assert late == stops


def _settings(tmp_path, run: str) -> ClientSettings:  # type: ignore[no-untyped-def]
    return ClientSettings(spool_dir=tmp_path / run, flush_interval=0.05, max_backoff=0.2, timeout=5.0,
                          close_timeout=20.0)


@pytest.mark.slow
def test_stress_pg_stops_itself_and_a_default_run_never_does(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with live_service(f"sqlite:///{tmp_path}/stop.db") as base, httpx.Client(base_url=base, timeout=20) as c:
        steps = 150  # pg's first critical alert fired at step 40-69 on seeds 0-3 under avx2 and default kernels
        pg = Trainer(make_config("stress", algo="pg", steps=steps))
        mon = client.attach(pg, run="pg-stop", project="s", server=base, settings=_settings(tmp_path, "pg"),
                            stop_on="critical")
        seen: list[Alert] = []
        mon.on_alert(seen.append)
        pg.train()
        mon.close(timeout=30)
        assert pg.stop_reason is not None and pg.step < steps
        alerts = c.get("/api/v1/runs/pg-stop/alerts").json()["alerts"]
        critical = [a for a in alerts if a["severity"] == "critical" and a["fired_step"] is not None]
        first = min(a["fired_step"] for a in critical)
        assert pg.step - first <= 30, (pg.step, first)  # stopped within 30 steps of the critical alert
        assert mon.alert_watch.stop_alert is not None and mon.alert_watch.stop_alert.rule in pg.stop_reason
        assert any(a.severity == "critical" for a in seen)

        healthy = Trainer(make_config("default", algo="sapo", steps=60))
        mon = client.attach(healthy, run="sapo-ok", project="s", server=base, settings=_settings(tmp_path, "ok"),
                            stop_on="critical")
        healthy.train()
        mon.close(timeout=30)
        assert healthy.stop_reason is None and healthy.step == 60
        r = c.post("/api/v1/runs/sapo-ok/steps", content=b'{"schema":1,"steps":[]}',
                   headers={"Content-Type": "application/json"})
        assert r.status_code in (200, 202) and r.json()["alerts"] == []
