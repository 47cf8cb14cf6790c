"""Helpers building step batches for the service tests."""

from __future__ import annotations

import gzip
import json
import math
from typing import Any

from sapo_monitor.client.wire import LOG_RATIO_HIST_BINS

__all__ = ["batch", "body", "post_steps", "series"]


def batch(steps: range | list[int], **fixed: float) -> list[dict[str, Any]]:
    """Step records with a few catalogue metrics, a custom metric and the histogram (values from the step)."""
    out = []
    for s in steps:
        metrics: dict[str, Any] = {"loss": 1.0 / (s + 1), "ratio.mean": 1.0 + (s % 5) * 0.01, "custom.x": float(s)}
        metrics.update(fixed)
        out.append({"step": s, "time": 1_764_000_000.0 + s, "metrics": metrics,
                    "histograms": {"log_ratio": [s % 3] * LOG_RATIO_HIST_BINS}})
    return out


def body(steps: list[dict[str, Any]], *, compress: bool = False) -> bytes:
    raw = json.dumps({"schema": 1, "steps": steps}).encode()
    return gzip.compress(raw) if compress else raw


def post_steps(client, run_id: str, steps: list[dict[str, Any]], *, compress: bool = False, **kw):  # type: ignore[no-untyped-def]
    headers = {"content-type": "application/json", **({"content-encoding": "gzip"} if compress else {})}
    headers.update(kw.pop("headers", {}))
    return client.post(f"/api/v1/runs/{run_id}/steps", content=body(steps, compress=compress), headers=headers, **kw)


def series(client, run_id: str, *metrics: str, **params):  # type: ignore[no-untyped-def]
    r = client.get(f"/api/v1/runs/{run_id}/series", params={"metric": list(metrics), **params})
    assert r.status_code == 200, r.text
    return r.json()


def decode(v: Any) -> float:
    return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}.get(v, v) if isinstance(v, str) else v
