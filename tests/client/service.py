"""The real sapo-monitor service for the client's end-to-end tests: uvicorn in a subprocess on
127.0.0.1, on a temporary SQLite database, that a test can kill (SIGKILL) and start again on the same
port and database."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveService:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> LiveService:
        env = {**os.environ, "SAPO_MONITOR_DB": f"sqlite:///{self.workdir / 'service.db'}", "SAPO_MONITOR_AUTH": "off"}
        log = open(self.workdir / "service.log", "ab")  # noqa: SIM115 (the child owns it)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "sapo_monitor.service.app:app_from_env",
             "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"service exited: {(self.workdir / 'service.log').read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError("service did not become ready in 60 s")

    def kill(self) -> None:
        """SIGKILL: the receiving side disappears mid-request, as in a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

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
