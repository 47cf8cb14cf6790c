"""Test helpers: a live service in a subprocess, reading runs back, and recording what the adapter observed."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import torch
from sapo_monitor.client import wire

from tests.support.live import ServiceProcess


class LiveService(ServiceProcess):
    """``sapo-monitor``'s FastAPI app under uvicorn in a subprocess, on a temporary SQLite database
    (started and ready once constructed)."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(f"sqlite:///{workdir / 'service.db'}", log_path=workdir / "service.log")
        self.start().wait_ready(60)

    def run(self, run_id: str) -> dict[str, Any]:
        r = httpx.get(f"{self.url}/api/v1/runs/{run_id}", timeout=10)
        r.raise_for_status()
        return r.json()

    def series(self, run_id: str, metrics: list[str]) -> dict[str, dict[str, list]]:
        """``{metric: {"step": [...], "value": [...]}}`` without downsampling (these runs are far below 10,000
        steps; the service caps max_points x metrics per request)."""
        r = httpx.get(f"{self.url}/api/v1/runs/{run_id}/series",
                      params=[("metric", m) for m in metrics] + [("max_points", 10_000)], timeout=30)
        r.raise_for_status()
        doc = r.json()
        assert doc["downsampling"]["method"] == "none"
        return doc["series"]

    def steps(self, run_id: str) -> dict[int, dict[str, float]]:
        """Every stored step of the run -> its catalogue metrics (decoded floats)."""
        out: dict[int, dict[str, float]] = defaultdict(dict)
        for name, s in self.series(run_id, sorted(wire.CATALOGUE)).items():
            assert len(s["step"]) == len(set(s["step"])), f"{name}: a step arrived twice"
            for step, value in zip(s["step"], s["value"], strict=True):
                out[step][name] = wire.decode_float(value)
        return dict(out)

    def histogram(self, run_id: str, step: int) -> list[int]:
        r = httpx.get(f"{self.url}/api/v1/runs/{run_id}/histogram",
                      params={"from_step": step, "to_step": step}, timeout=10)
        r.raise_for_status()
        return r.json()["counts"]


class Recorder:
    """Wraps a Monitor's ``observe`` / ``end_step`` to keep copies of what the adapter handed over.

    ``steps[step]`` is the list of that step's micro-batches (dicts of cloned tensors).
    It also checks on the way that nothing handed to the monitor requires grad.
    """

    def __init__(self, monitor: Any) -> None:
        self.monitor = monitor
        self.pending: list[dict[str, torch.Tensor]] = []
        self.steps: dict[int, list[dict[str, torch.Tensor]]] = {}
        self.end_kwargs: dict[int, dict[str, Any]] = {}
        self.records: dict[int, wire.StepRecord] = {}
        self._observe, self._end_step = monitor.observe, monitor.end_step
        monitor.observe = self.observe
        monitor.end_step = self.end_step

    def observe(self, *args: Any, **kwargs: Any) -> None:
        assert not args, "the adapter passes tensors by name"
        for name, value in kwargs.items():
            assert not value.requires_grad, f"{name} requires grad"
        self.pending.append({k: v.detach().clone() for k, v in kwargs.items()})
        self._observe(*args, **kwargs)

    def end_step(self, step: int, **kwargs: Any) -> wire.StepRecord:
        self.steps[step], self.pending = self.pending, []
        self.end_kwargs[step] = kwargs
        record = self._end_step(step, **kwargs)
        self.records[step] = record
        return record


def concat_step(micro_batches: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """One step's micro-batches as one batch: [B, T] tensors right-padded to a common T (mask 0)."""
    width = max(mb["mask"].shape[1] for mb in micro_batches)
    out: dict[str, torch.Tensor] = {}
    for key in micro_batches[0]:
        parts = []
        for mb in micro_batches:
            t = mb[key]
            if t.dim() == 2:
                t = torch.nn.functional.pad(t, (0, width - t.shape[1]))
            parts.append(t)
        out[key] = torch.cat(parts)
    return out


def trl_sapo_gate_mean(batch: dict[str, torch.Tensor], tau_pos: float, tau_neg: float) -> float:
    """TRL 1.16's SAPO gate ``sigmoid(tau * (r - 1)) * 4 / tau``, written as in its ``_compute_loss``,
    averaged over masked tokens with a non-zero advantage."""
    advantages = batch["advantages"].unsqueeze(1)
    coef_1 = torch.exp(batch["logp_new"] - batch["logp_old"])
    temperatures = torch.where(advantages > 0, tau_pos, tau_neg)
    soft_coef_1 = torch.sigmoid(temperatures * (coef_1 - 1)) * 4 / temperatures
    keep = batch["mask"].bool() & (advantages != 0)
    return float(soft_coef_1.double()[keep].mean())
