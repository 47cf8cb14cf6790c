"""What the web UI needs about one run beyond ``runs.py``: its metric names, its alert bands, and its
log-ratio histogram over steps (a heatmap). Public, documented endpoints like any other."""

from __future__ import annotations

from typing import Annotated, Any, Literal, cast

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field
from sapo_monitor.client.wire import CATALOGUE, LOG_RATIO_HIST_EDGES, LOG_RATIO_HIST_NAME
from sqlalchemy import Engine

from ..errors import BadRequest, ErrorOut
from ..storage.alert_queries import list_alerts
from ..storage.read_cache import VersionedCache
from ..storage.rule_defs import cached_rules
from ..storage.run_views import HeatmapBuckets, histogram_buckets, metric_names
from .deps import AuthDep, DbDep
from .responses import wire_value
from .runs import StepBound, load_run
from .schemas import RUN_ID_PATTERN

__all__ = ["router"]

router = APIRouter(tags=["runs"])
RunIdPath = Annotated[str, Path(pattern=RUN_ID_PATTERN, description="Run id chosen by the client.")]
_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorOut} for code in (401, 403, 404, 422)}
_HEATMAPS: VersionedCache[HeatmapBuckets] = VersionedCache(size=32)  # the last few views' buckets


class MetricOut(BaseModel):
    name: str
    catalogue: bool = Field(description="True for a catalogue metric (its meaning is in `description`).")
    description: str


class RunMetricsOut(BaseModel):
    run_id: str
    metrics: list[MetricOut] = Field(description="Catalogue metrics in catalogue order, then custom ones by name.")


class AlertBandOut(BaseModel):
    alert_id: str
    rule: str
    severity: Literal["warning", "critical"]
    state: Literal["pending", "firing", "resolved"]
    from_step: int = Field(description="Step the alert went pending (its condition first held).")
    fired_step: int | None = Field(description="Step it fired (null: never fired).")
    to_step: int | None = Field(description="Step it resolved (null: still open, the band runs to the last step).")
    description: str = Field(description="The rule's description (user text).")
    values: dict[str, Any]


class AlertBandsOut(BaseModel):
    run_id: str
    last_step: int | None
    bands: list[AlertBandOut] = Field(description="Ordered by from_step.")


class HeatmapOut(BaseModel):
    run_id: str
    name: str
    edges: list[float | str | None] = Field(description="The 43 bin edges of the log-ratio histogram.")
    bucket_steps: int = Field(description="Steps per bucket (1: one bucket per step).")
    start: list[int] = Field(description="First step of each bucket.")
    end: list[int] = Field(description="Last step of each bucket.")
    steps: list[int] = Field(description="Steps in each bucket that carried a histogram.")
    counts: list[list[int]] = Field(description="Per bucket, the 42 bin counts summed over its steps.")
    from_step: int | None
    to_step: int | None


@router.get("/runs/{run_id}/metrics", response_model=RunMetricsOut, responses=_ERRORS,
            summary="Metric names of a run")
def run_metrics_route(run_id: RunIdPath, db: DbDep, principal: AuthDep) -> RunMetricsOut:
    """Every metric the run has at least one value of (NaN included): catalogue and custom."""
    info = load_run(db, principal, run_id)
    with db.read() as session:
        catalogue, custom = metric_names(session, run_pk=info.pk)
    return RunMetricsOut(
        run_id=info.run_id,
        metrics=[MetricOut(name=m, catalogue=True, description=CATALOGUE[m]) for m in catalogue]
        + [MetricOut(name=m, catalogue=False, description="") for m in custom],
    )


@router.get("/runs/{run_id}/alert-bands", response_model=AlertBandsOut, responses=_ERRORS,
            summary="A run's alerts as step bands")
def alert_bands_route(run_id: RunIdPath, db: DbDep, principal: AuthDep) -> AlertBandsOut:
    """Each alert of the run (pending, firing or resolved) as the step range it covers, with its rule's
    severity and description: what the UI draws on every chart."""
    info = load_run(db, principal, run_id)
    with db.read() as session:
        alerts = list_alerts(session, run_id=info.run_id, limit=10_000)
        descriptions = {r.id: r.description for r in cached_rules(session)}
    bands = [
        AlertBandOut(alert_id=a.id, rule=a.rule, severity=a.severity, state=a.state,  # type: ignore[arg-type]
                     from_step=a.started_step, fired_step=a.fired_step, to_step=a.resolved_step,
                     description=descriptions.get(a.rule, ""), values=a.values)
        for a in alerts
    ]
    bands.sort(key=lambda b: (b.from_step, b.rule))
    return AlertBandsOut(run_id=info.run_id, last_step=info.last_step, bands=bands)


@router.get("/runs/{run_id}/histogram/steps", response_model=HeatmapOut, responses=_ERRORS,
            summary="Log-ratio histogram over steps (heatmap)")
def histogram_steps_route(
    run_id: RunIdPath,
    db: DbDep,
    principal: AuthDep,
    from_step: StepBound = None,
    to_step: StepBound = None,
    max_buckets: Annotated[int, Query(ge=1, le=5000, description="Most step buckets returned.")] = 400,
) -> HeatmapOut:
    """The 42-bin log-ratio histogram per bucket of steps over ``[from_step, to_step]``: one bucket per
    step when the range has at most ``max_buckets`` steps, else the counts summed over aligned buckets
    of ``bucket_steps`` steps (no count is dropped). Buckets with no histogram are left out."""
    if from_step is not None and to_step is not None and from_step > to_step:
        raise BadRequest("from_step is after to_step", ["query", "from_step"])
    info = load_run(db, principal, run_id)
    edges = [wire_value(e) for e in LOG_RATIO_HIST_EDGES]
    empty = HeatmapOut(run_id=info.run_id, name=LOG_RATIO_HIST_NAME, edges=edges, bucket_steps=1, start=[], end=[],
                       steps=[], counts=[], from_step=None, to_step=None)
    if info.first_step is None or info.last_step is None:
        return empty
    lo = max(info.first_step, from_step or 0)
    hi = min(info.last_step, to_step if to_step is not None else info.last_step)
    if lo > hi:
        return empty
    with db.read() as session:
        # Kept while the run is unchanged (its last_seen_at and step range, which every ingest changes).
        hb = _HEATMAPS.get((str(cast(Engine, session.get_bind()).url), info.pk, lo, hi, max_buckets),
                           (info.last_seen_at, info.first_step, info.last_step),
                           lambda: histogram_buckets(session, run_pk=info.pk, lo=lo, hi=hi, max_buckets=max_buckets))
    return HeatmapOut(run_id=info.run_id, name=LOG_RATIO_HIST_NAME, edges=edges, bucket_steps=hb.width,
                      start=hb.start, end=hb.end, steps=hb.steps, counts=hb.counts, from_step=lo, to_step=hi)
