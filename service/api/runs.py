"""Reading runs: list, one run, its series, its histogram; and deleting a run (admin)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response
from sapo_monitor.client import wire
from sapo_monitor.client.wire import LOG_RATIO_HIST_EDGES, LOG_RATIO_HIST_NAME
from starlette.concurrency import run_in_threadpool

from ..auth import Principal
from ..errors import BadRequest, ErrorOut, NotFound
from ..storage.db import Database
from ..storage.range_reads import histogram_sum
from ..storage.run_views import fetch_many
from ..storage.runs import RunInfo, delete_run, get_run, latest_values, list_runs
from ..storage.series import bucket_width, points, uses_blocks
from .deps import AuthDep, DbDep
from .read_limits import check_points_budget
from .responses import downsampling_doc, json_response, wire_value, wire_values
from .schemas import NAME_PATTERN, RUN_ID_PATTERN, HistogramOut, RunOut, RunPageOut, SeriesOut

__all__ = ["MetricQuery", "check_metrics", "check_query_text", "router", "run_out"]

router = APIRouter(tags=["runs"])
RunIdPath = Annotated[str, Path(pattern=RUN_ID_PATTERN, max_length=wire.RUN_ID_MAX_LEN,
                                description="Run id chosen by the client.")]
MetricQuery = Annotated[
    list[str],
    Query(description="Metric name (repeat for several).", min_length=1, max_length=64),
]
MaxPoints = Annotated[int, Query(ge=3, le=100_000, description="Most points returned per metric and run.")]
StepBound = Annotated[int | None, Query(ge=0, le=2**62 - 1)]
_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorOut} for code in (401, 403, 404, 422)}


def check_metrics(metrics: list[str]) -> None:
    for i, m in enumerate(metrics):
        if not wire.is_metric_name(m):
            raise BadRequest(f"metric names match [a-z0-9_.]+ (at most {wire.METRIC_NAME_MAX_LEN} characters)",
                             ["query", "metric", i])


def check_query_text(value: str | None, loc: list[str | int], max_len: int | None = None) -> None:
    """A query value the databases can compare (PostgreSQL refuses NUL): else a 422 naming it."""
    problem = None if value is None else wire.text_problem(value, max_len)
    if problem:
        raise BadRequest(problem, loc)


def run_out(info: RunInfo, latest: dict[str, tuple[int, float]] | None = None) -> RunOut:
    return RunOut(
        run_id=info.run_id,
        project=info.project,
        name=info.name,
        algorithm=info.algorithm,
        config=info.config,
        tags=info.tags,
        status=info.status,
        created_at=info.created_at,
        updated_at=info.updated_at,
        last_seen_at=info.last_seen_at,
        first_step=info.first_step,
        last_step=info.last_step,
        latest=None if latest is None else {k: wire_value(v) for k, (_, v) in latest.items()},
        latest_step=None if latest is None else {k: s for k, (s, _) in latest.items()},
    )


def _parse_tags(tags: list[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for i, t in enumerate(tags):
        check_query_text(t, ["query", "tag", i])
        key, sep, value = t.partition(":")
        if not key:
            raise BadRequest("tag filters are 'key' or 'key:value'", ["query", "tag", i])
        out[key] = value if sep else None
    return out


@router.get("/runs", response_model=RunPageOut, responses=_ERRORS, summary="List runs")
def list_runs_route(
    db: DbDep,
    principal: AuthDep,
    project: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
    algorithm: Annotated[str | None, Query(max_length=wire.ALGORITHM_MAX_LEN)] = None,
    status: Annotated[str | None, Query(pattern="^(running|finished|failed)$")] = None,
    tag: Annotated[list[str], Query(description="'key' or 'key:value'; repeat to AND them.",
                                    max_length=20)] = [],  # noqa: B006
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> RunPageOut:
    """Newest-seen first. A project-scoped token sees only its project."""
    check_query_text(algorithm, ["query", "algorithm"])
    principal.require("read", project)
    if principal.project is not None:
        project = principal.project
    with db.read() as session:
        page = list_runs(session, project=project, algorithm=algorithm, status=status, tags=_parse_tags(tag),
                         limit=limit, offset=offset)
    return RunPageOut(runs=[run_out(r) for r in page.runs], total=page.total, limit=page.limit,
                      offset=page.offset)


def load_run(db: Database, principal: Principal, run_id: str, role: str = "read") -> RunInfo:
    """The run, or 404 (also when it is in a project the caller's token is not for); 403 without ``role``."""
    principal.require(role, None)
    with db.read() as session:
        info = get_run(session, run_id=run_id)
    hidden = NotFound(f"run {run_id!r} not found", ["path", "run_id"])
    if info is None:
        raise hidden
    principal.require_visible(role, info.project, hidden)  # another project's run: 404 as well
    return info


@router.get("/runs/{run_id}", response_model=RunOut, responses=_ERRORS, summary="One run")
def get_run_route(run_id: RunIdPath, db: DbDep, principal: AuthDep) -> RunOut:
    """The run with its step range and the latest value of each metric."""
    info = load_run(db, principal, run_id)
    with db.read() as session:
        latest = latest_values(session, run_pk=info.pk)
    return run_out(info, latest)


@router.get("/runs/{run_id}/series", response_model=SeriesOut, responses=_ERRORS, summary="Metric series")
async def series_route(
    run_id: RunIdPath,
    db: DbDep,
    principal: AuthDep,
    metric: MetricQuery,
    from_step: StepBound = None,
    to_step: StepBound = None,
    max_points: MaxPoints = 1000,
) -> Response:
    """One series per metric. Above ``max_points`` the series is downsampled: per bucket of steps the
    minimum and the maximum (with the steps where they occur) and the first NaN are kept, so a
    one-step spike or a NaN always shows."""
    check_metrics(metric)
    if from_step is not None and to_step is not None and from_step > to_step:
        raise BadRequest("from_step is after to_step", ["query", "from_step"])
    check_points_budget(max_points, len(set(metric)))

    def read() -> dict:
        info = load_run(db, principal, run_id)
        metrics = list(dict.fromkeys(metric))
        return series_doc(db, info, metrics, from_step, to_step, max_points)

    return json_response(await run_in_threadpool(read))


def series_doc(db: Database, info: RunInfo, metrics: list[str], from_step: int | None, to_step: int | None,
               max_points: int) -> dict:
    series: dict[str, dict] = {}
    width = None
    lo = hi = None
    if info.first_step is not None and info.last_step is not None:
        lo = max(info.first_step, from_step or 0)
        hi = min(info.last_step, to_step if to_step is not None else info.last_step)
    with db.read() as session:
        if lo is not None and hi is not None and lo <= hi:
            blocks = uses_blocks(lo, hi, max_points)
            pieces = fetch_many(session, run_pk=info.pk, metrics=metrics, lo=lo, hi=hi, blocks=blocks)
            nan = any(p.has_nan for p in pieces.values())
            width = bucket_width(lo, hi, max_points, 3 if nan else 2)
            for m in metrics:
                p = points(pieces[m], width)
                series[m] = {"step": p.step, "value": wire_values(p.value)}
        else:
            lo = hi = None
            series = {m: {"step": [], "value": []} for m in metrics}
    return {
        "run_id": info.run_id,
        "series": series,
        "downsampling": downsampling_doc(width, max_points, lo, hi),
    }


@router.get("/runs/{run_id}/histogram", response_model=HistogramOut, responses=_ERRORS,
            summary="Log-ratio histogram over a step window")
def histogram_route(
    run_id: RunIdPath,
    db: DbDep,
    principal: AuthDep,
    from_step: StepBound = None,
    to_step: StepBound = None,
) -> HistogramOut:
    """The 42-bin log-ratio histogram summed over ``[from_step, to_step]`` (default: the whole run)."""
    if from_step is not None and to_step is not None and from_step > to_step:
        raise BadRequest("from_step is after to_step", ["query", "from_step"])
    info = load_run(db, principal, run_id)
    counts = [0] * (len(LOG_RATIO_HIST_EDGES) - 1)
    n = 0
    lo = hi = None
    if info.first_step is not None and info.last_step is not None:
        lo = max(info.first_step, from_step or 0)
        hi = min(info.last_step, to_step if to_step is not None else info.last_step)
        if lo <= hi:
            with db.read() as session:
                counts, n = histogram_sum(session, run_pk=info.pk, lo=lo, hi=hi)
    return HistogramOut(
        run_id=info.run_id,
        name=LOG_RATIO_HIST_NAME,
        edges=[wire_value(e) for e in LOG_RATIO_HIST_EDGES],
        counts=counts,
        steps=n,
        from_step=lo,
        to_step=hi,
    )


@router.delete("/runs/{run_id}", status_code=204, responses=_ERRORS, summary="Delete a run (admin)")
def delete_run_route(run_id: RunIdPath, db: DbDep, principal: AuthDep) -> Response:
    """Deletes the run with all its steps. Needs an ``admin`` token of the run's project."""
    info = load_run(db, principal, run_id, role="admin")
    with db.write() as session:
        delete_run(session, run_pk=info.pk)
    return Response(status_code=204)
