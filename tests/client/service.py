"""The real sapo-monitor service for the client's end-to-end tests: uvicorn in a subprocess on
127.0.0.1, on a temporary SQLite database, that a test can kill (SIGKILL) and start again on the same
port and database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.support.live import ServiceProcess


class LiveService(ServiceProcess):
    def __init__(self, workdir: Path) -> None:
        super().__init__(f"sqlite:///{workdir / 'service.db'}", env={"SAPO_MONITOR_AUTH": "off"},
                         log_path=workdir / "service.log")

    def start(self) -> LiveService:
        """Start (or start again after ``kill``) and wait until ready."""
        super().start()
        self.wait_ready(60)
        return self

    def run(self, run_id: str) -> dict[str, Any]:
        r = httpx.get(f"{self.url}/api/v1/runs/{run_id}", timeout=10)
        r.raise_for_status()
        return r.json()

    def series(self, run_id: str, metric: str) -> dict[str, list]:
        r = httpx.get(f"{self.url}/api/v1/runs/{run_id}/series",
                      params={"metric": metric, "max_points": 100000}, timeout=10)
        r.raise_for_status()
        return r.json()["series"][metric]

    def steps(self, run_id: str, metric: str = "loss") -> list[int]:
        return self.series(run_id, metric)["step"]

    def step_metrics(self, run_id: str, step: int, metrics: list[str]) -> dict[str, Any]:
        r = httpx.get(f"{self.url}/api/v1/runs/{run_id}/series",
                      params=[("metric", m) for m in metrics] + [("from_step", step), ("to_step", step)],
                      timeout=10)
        r.raise_for_status()
        return {m: s["value"][0] for m, s in r.json()["series"].items() if s["value"]}
