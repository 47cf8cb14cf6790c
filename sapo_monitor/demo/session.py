"""The demo end to end: service in the background, four stress runs streamed to it, the comparison.

Kept free of Typer so that it can be driven from tests; ``sapo_monitor/cli/demo.py`` is the command.
"""

from __future__ import annotations

import json
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from .outcome import SERIES_METRICS, AlertEvent, RunOutcome, build_outcome, parse_series
from .receiver import WebhookReceiver
from .server import ServiceProcess, free_port, port_is_free, start_service

__all__ = ["DemoConfig", "DemoSession", "fetch_outcome", "run_trainer", "subscribe_webhook"]

ALGORITHMS = ("sapo", "grpo", "gspo", "pg")

# progress(run_id, steps_done, steps_total)
Progress = Callable[[str, int, int], None]


DEMO_GROUP_WAIT_S = 1.0  # incident notifications: first one 1 s after the incident opens
DEMO_GROUP_INTERVAL_S = 4.0  # changes (escalation, resolution) at most every 4 s

@dataclass
class DemoConfig:
    algorithms: tuple[str, ...] = ALGORITHMS
    steps: int = 300
    preset: str = "stress"
    seed: int = 0
    project: str = "demo"
    port: int = 8321  # 0: any free port
    db: str | None = None  # None: a fresh SQLite file in a temporary folder
    out_dir: Path = field(default_factory=lambda: Path("sapo-demo"))


@dataclass
class DemoSession:
    """A running demo: the service, the webhook receiver, and where its files go."""

    config: DemoConfig
    service: ServiceProcess
    receiver: WebhookReceiver
    run_prefix: str
    workdir: Path

    @property
    def api(self) -> str:
        return f"{self.service.url}/api/v1"

    def run_id(self, algorithm: str) -> str:
        return f"{self.run_prefix}-{algorithm}"

    def ui_url(self) -> str:
        """The web UI's compare page for the demo's runs."""
        runs = "&".join(f"run={self.run_id(a)}" for a in self.config.algorithms)
        return f"{self.service.url}/#/compare?{runs}"

    def urls(self) -> dict[str, str]:
        runs = "&".join(f"run={self.run_id(a)}" for a in self.config.algorithms)
        return {
            "Web UI (compare)": self.ui_url(),  # first: the page a person opens
            "API docs": f"{self.service.url}/docs",
            "Prometheus metrics": f"{self.service.url}/metrics",
            "Compare": f"{self.api}/compare?{runs}&metric=reward.mean&metric=log_ratio.std&max_points=200",
            "Alerts": f"{self.api}/alerts?project={self.config.project}",
        }


@contextmanager
def open_session(config: DemoConfig, log: Callable[[str], None] = print) -> Iterator[DemoSession]:
    """Start the receiver and the service; stop both (and remove temporary files) on exit."""
    workdir = Path(tempfile.mkdtemp(prefix="sapo-demo-"))
    db = config.db or f"sqlite:///{workdir / 'demo.db'}"
    port = config.port
    if port == 0 or not port_is_free(port):
        if port:
            log(f"port {port} is taken; using another one")
        port = free_port()
    receiver = WebhookReceiver().start()
    service = None
    try:
        # Loopback only, so no tokens: whatever SAPO_MONITOR_AUTH the user's shell exports. The demo's
        # receiver is on loopback, which webhooks may reach only through the allow-list. Its runs last
        # seconds, not hours: incident timers to match (the defaults wait 10 s / 60 s before telling).
        service = start_service(db, port, workdir / "service.log",
                                env={"SAPO_MONITOR_AUTH": "off", "SAPO_MONITOR_WEBHOOK_ALLOW_HOSTS": "127.0.0.1",
                                     "SAPO_MONITOR_INCIDENT_GROUP_WAIT_S": str(DEMO_GROUP_WAIT_S),
                                     "SAPO_MONITOR_INCIDENT_GROUP_INTERVAL_S": str(DEMO_GROUP_INTERVAL_S)})
        prefix = f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
        yield DemoSession(config, service, receiver, prefix, workdir)
    finally:
        if service is not None:
            service.stop()
        receiver.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def subscribe_webhook(session: DemoSession) -> dict[str, Any]:
    """Subscribe the local receiver to every alert of the demo project (JSON payloads, signed)."""
    body = {
        "url": session.receiver.url,
        "project": session.config.project,
        "min_severity": "warning",
        "format": "json",
        "secret": secrets.token_hex(16),
    }
    resp = httpx.post(f"{session.api}/webhooks", json=body, timeout=10.0)
    resp.raise_for_status()
    return resp.json()


def run_trainer(session: DemoSession, algorithm: str, progress: Progress) -> Any:
    """Train one run of the bundled trainer with the client attached; return the trainer's summary."""
    from sapo_monitor.client import attach
    from sapo_monitor.trainer import Trainer, make_config

    cfg = session.config
    run_id = session.run_id(algorithm)
    trainer = Trainer(make_config(cfg.preset, algo=algorithm, steps=cfg.steps, seed=cfg.seed))
    # The session's own spool (removed with it): the demo never writes into the user's ~/.cache.
    monitor = attach(trainer, run=run_id, project=cfg.project, server=session.service.url,
                     spool_dir=session.workdir / "spool")
    try:
        summary = trainer.train(progress=lambda step_log: progress(run_id, step_log.step + 1, cfg.steps))
    finally:
        monitor.close()  # flushes every queued step to the service before returning
    return summary


def _alert_events(doc: dict[str, Any]) -> list[AlertEvent]:
    """The alerts that reached ``firing``, from ``GET /runs/{id}/alerts`` (pending ones never fired)."""
    return [
        AlertEvent(rule=a["rule"], severity=a["severity"], step=int(a["fired_step"]))
        for a in doc["alerts"]
        if a.get("fired_step") is not None
    ]


def _webhooks_for(session: DemoSession, run_id: str) -> int:
    return sum(run_id in json.dumps(d.body) for d in session.receiver.deliveries())


def fetch_outcome(session: DemoSession, algorithm: str) -> RunOutcome:
    run_id = session.run_id(algorithm)
    params: list[tuple[str, str | int]] = [("metric", m) for m in SERIES_METRICS]
    params.append(("max_points", 2000))
    series = httpx.get(f"{session.api}/runs/{run_id}/series", params=params, timeout=30.0)
    series.raise_for_status()
    alerts = httpx.get(f"{session.api}/runs/{run_id}/alerts", timeout=30.0)
    alerts.raise_for_status()
    return build_outcome(
        run_id,
        algorithm,
        parse_series(series.json()),
        _alert_events(alerts.json()),
        webhooks=_webhooks_for(session, run_id),
    )


def wait_for_deliveries(session: DemoSession, timeout: float = 20.0,
                        quiet: float = DEMO_GROUP_INTERVAL_S + 1.0) -> int:
    """Wait until the receiver has seen no new delivery for ``quiet`` seconds (or ``timeout``)."""
    deadline = time.monotonic() + timeout
    count, last_change = len(session.receiver.deliveries()), time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - last_change < quiet:
        time.sleep(0.2)
        now = len(session.receiver.deliveries())
        if now != count:
            count, last_change = now, time.monotonic()
    return count
