"""Request and response bodies of the HTTP API (pydantic at the boundary only).

Metric values in responses are numbers, or the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``
(the wire encoding); ``null`` where a compared run has no point at a step.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator
from sapo_monitor.client import wire

__all__ = [
    "NAME_PATTERN",
    "RUN_ID_PATTERN",
    "CompareOut",
    "HistogramOut",
    "IngestOut",
    "RunIn",
    "RunOut",
    "RunPageOut",
    "SeriesOut",
    "storable_text",
]

RUN_ID_PATTERN = wire.RUN_ID_PATTERN
NAME_PATTERN = wire.PROJECT_PATTERN
Value = float | Literal["NaN", "Infinity", "-Infinity"]



def storable_text(value: str | None) -> str | None:
    """A text field the databases can store (PostgreSQL refuses NUL): else a ValueError, a 422 on both."""
    problem = None if value is None else wire.text_problem(value)
    if problem:
        raise ValueError(problem)
    return value

class RunIn(BaseModel):
    """``PUT /runs/{run_id}``: fields left out keep their stored value (``project`` included)."""

    project: str | None = Field(
        None, pattern=NAME_PATTERN,
        description="Project the run belongs to; omitted: the run's own (a new run: the token's, else 'default').",
    )
    name: str | None = Field(None, max_length=wire.RUN_NAME_MAX_LEN)
    algorithm: str | None = Field(None, max_length=wire.ALGORITHM_MAX_LEN, description="sapo, grpo, gspo, ...")
    config: dict[str, Any] | None = Field(None, description=wire.CONFIG_DESCRIPTION)
    tags: dict[str, str] | None = Field(
        None, description=f"Key -> value labels used to filter runs (keys at most {wire.TAG_KEY_MAX_LEN} "
        f"characters, values at most {wire.TAG_VALUE_MAX_LEN}).",
    )
    status: Literal["running", "finished", "failed"] | None = None

    _storable_text = field_validator("name", "algorithm")(storable_text)

    @field_validator("tags")
    @classmethod
    def _storable_tags(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        for key, value in (v or {}).items():
            problem = wire.text_problem(key, wire.TAG_KEY_MAX_LEN)
            if problem:
                raise ValueError(f"tag key {key[:50]!r}: {problem}")
            problem = wire.text_problem(value, wire.TAG_VALUE_MAX_LEN)
            if problem:
                raise ValueError(f"tag {key[:50]!r}: value {problem}")
        return v

    @field_validator("config")
    @classmethod
    def _storable_config(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        # NaN/Infinity become the wire strings (kept, not null); too-large ints and deep nesting are refused
        return None if v is None else wire.encode_tree(v, loc=["config"])


class RunOut(BaseModel):
    run_id: str
    project: str
    name: str | None
    algorithm: str | None
    config: dict[str, Any]
    tags: dict[str, str]
    status: str
    created_at: float = Field(description="Epoch seconds.")
    updated_at: float
    last_seen_at: float
    first_step: int | None
    last_step: int | None
    latest: dict[str, Value] | None = Field(
        None, description="Latest value of each metric (GET /runs/{run_id} only)."
    )
    latest_step: dict[str, int] | None = Field(None, description="The step each latest value comes from.")


class RunPageOut(BaseModel):
    runs: list[RunOut]
    total: int
    limit: int
    offset: int


class FiringAlertOut(BaseModel):
    id: str = Field(description="Alert id (GET /alerts).")
    rule: str
    severity: str = Field(description="warning or critical.")


class IngestOut(BaseModel):
    run_id: str
    accepted: int = Field(description="Step records stored (duplicates within the batch counted once).")
    first_step: int | None
    last_step: int | None
    alerts: list[FiringAlertOut] = Field(
        default_factory=list, description="The run's alerts firing once this batch was evaluated (no polling)."
    )


class SeriesPoints(BaseModel):
    step: list[int]
    value: list[Value]


class Downsampling(BaseModel):
    method: Literal["none", "minmax"] = Field(
        description="'none': every stored point; 'minmax': per bucket of bucket_steps steps, the minimum "
        "and maximum (with their steps) and the first NaN."
    )
    max_points: int
    bucket_steps: int | None
    from_step: int | None
    to_step: int | None


class SeriesOut(BaseModel):
    run_id: str
    series: dict[str, SeriesPoints]
    downsampling: Downsampling


class HistogramOut(BaseModel):
    run_id: str
    name: str
    edges: list[float | Literal["-Infinity", "Infinity"]] = Field(description="43 bin edges.")
    counts: list[int] = Field(description="42 counts; bin i covers [edges[i], edges[i+1]).")
    steps: int = Field(description="Steps in the window that carried a histogram.")
    from_step: int | None
    to_step: int | None


class MetricSummary(BaseModel):
    first_step: int | None
    last_step: int | None
    first: Value | None
    last: Value | None
    best: Value | None
    best_step: int | None
    worst: Value | None
    worst_step: int | None
    mean_last_10pct: Value | None
    best_is: Literal["max", "min"]
    delta: dict[str, Value | None] | None = Field(
        None, description="This run minus the first run named, for first, last, best, worst, mean_last_10pct."
    )


class CompareMetric(BaseModel):
    step: list[int] = Field(description="Union of the runs' (downsampled) steps.")
    values: dict[str, list[Value | None]] = Field(description="run_id -> value at each step (null: no point).")


class CompareRun(BaseModel):
    run_id: str
    project: str
    name: str | None
    algorithm: str | None
    first_step: int | None
    last_step: int | None
    first_warning_step: int | None = Field(None, description="First step at which a warning alert fired.")
    first_critical_step: int | None = Field(
        None, description="First step at which a critical alert fired: the run's collapse step."
    )
    summary: dict[str, MetricSummary]


class CompareOut(BaseModel):
    runs: list[CompareRun]
    metrics: dict[str, CompareMetric]
    downsampling: Downsampling
