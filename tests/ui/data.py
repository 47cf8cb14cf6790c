"""Real runs for the UI tests: the bundled trainer streamed through the client, and a collapsing
run posted to the ingest endpoint (its alerts come from the service's built-in rules)."""

from __future__ import annotations

from pathlib import Path

import httpx
from sapo_monitor.client.settings import ClientSettings
from sapo_monitor.client.wire import LOG_RATIO_HIST_BINS
from sapo_monitor.trainer.train import Trainer, make_config

from sapo_monitor import client
from tests.alerts.traces import collapse_trace

__all__ = ["XSS_NAME", "post_trace", "train_run"]

XSS_NAME = '<img src=x onerror="document.title=\'pwned\'">'


def train_run(base: str, spool: Path, *, run: str, steps: int = 40, project: str = "ui") -> None:
    """The bundled SAPO trainer for ``steps`` steps, attached with the client, into the service."""
    trainer = Trainer(make_config("default", algo="sapo", steps=steps))
    settings = ClientSettings(spool_dir=spool, flush_interval=0.05, max_backoff=0.2, timeout=5.0, close_timeout=20.0)
    mon = client.attach(trainer, run=run, project=project, server=base, settings=settings)
    trainer.train()
    mon.close(timeout=30)


def _hist(step: int) -> list[int]:
    # A log-ratio histogram that widens once the ratio variance surges (step 41 on).
    width = 2 if step < 41 else 9
    return [1000 if abs(i - 21) < width else 3 for i in range(LOG_RATIO_HIST_BINS)]


def post_trace(http: httpx.Client, run: str, *, name: str, project: str = "ui", steps: range | None = None,
               tags: dict[str, str] | None = None) -> None:
    """The alert tests' collapse trace (a 6x ratio-variance surge at step 41, gate saturation, entropy
    and reward collapse, NaN loss at 75) as ``run``, through ``PUT /runs`` and ``POST .../steps``."""
    r = http.put(f"/api/v1/runs/{run}", json={"project": project, "name": name, "algorithm": "grpo",
                                              "tags": tags or {"suite": "ui"}})
    assert r.status_code in (200, 201), r.text
    trace = collapse_trace()
    if steps is not None:
        trace = [t for t in trace if t[0] in steps]
    docs = []
    for s, m in trace:
        docs.append({"step": s, "time": 1_764_000_000.0 + s,
                     "metrics": {k: ("NaN" if v != v else v) for k, v in m.items()},
                     "histograms": {"log_ratio": _hist(s)}})
    for i in range(0, len(docs), 30):
        r = http.post(f"/api/v1/runs/{run}/steps", json={"schema": 1, "steps": docs[i:i + 30]})
        assert r.status_code in (200, 202), r.text
