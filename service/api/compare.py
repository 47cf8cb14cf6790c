"""``GET /compare``: several runs' series aligned by step, with per-run summaries and deltas."""

from __future__ import annotations

from typing import Annotated, Any, cast

from fastapi import APIRouter, Query, Response
from sapo_monitor.client import wire
from sqlalchemy import Engine
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from ..auth import Principal
from ..errors import BadRequest, ErrorOut, NotFound
from ..storage.alert_queries import first_alert_steps
from ..storage.compare import HIGHER_IS_BETTER, Summary, delta, last_tenth, summarize
from ..storage.db import Database
from ..storage.range_reads import first_last, prime_means
from ..storage.read_cache import VersionedCache
from ..storage.run_views import fetch_many
from ..storage.runs import RunInfo, get_runs
from ..storage.series import bucket_width, points, uses_blocks
from .deps import AuthDep, DbDep
from .read_limits import check_points_budget
from .responses import downsampling_doc, json_response, wire_value, wire_values
from .runs import MaxPoints, MetricQuery, StepBound, check_metrics
from .schemas import CompareOut

__all__ = ["router"]

router = APIRouter(tags=["compare"])
_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorOut} for code in (401, 403, 404, 422)}


@router.get("/compare", response_model=CompareOut, responses=_ERRORS, summary="Compare runs")
async def compare_route(
    db: DbDep,
    principal: AuthDep,
    run: Annotated[list[str], Query(description="Run id (repeat; the first is the reference).",
                                    min_length=1, max_length=16)],
    metric: MetricQuery,
    from_step: StepBound = None,
    to_step: StepBound = None,
    max_points: MaxPoints = 1000,
) -> Response:
    """Each metric's series per run on one shared bucket grid (the union of the runs' steps, ``null``
    where a run has no point), and per run and metric: step range, first and last value, best and
    worst value with their steps, mean over the last 10% of steps, and the deltas of those against
    the first run named."""
    check_metrics(metric)
    for i, r in enumerate(run):
        if not wire.is_run_id(r):  # the one rule: a NUL byte here was a 503 on PostgreSQL
            raise BadRequest(f"run id {r[:50]!r} is not valid: {wire.RUN_ID_RULE}", ["query", "run", i])
    if from_step is not None and to_step is not None and from_step > to_step:
        raise BadRequest("from_step is after to_step", ["query", "from_step"])
    principal.require("read", None)
    run_ids = list(dict.fromkeys(run))
    metrics = list(dict.fromkeys(metric))
    check_points_budget(max_points, len(metrics), len(run_ids))
    return json_response(await run_in_threadpool(_compare, db, principal, run_ids, metrics, from_step, to_step,
                                                 max_points))


# Run summaries of recent compares, kept while their run is unchanged (its last_seen_at and step range,
# which every ingest into it changes, read with the runs): a compare of finished runs looked at again,
# or after a zoom, does not read every metric's first, last and last-10% values again.
_SUMMARIES: VersionedCache[Summary] = VersionedCache(size=512)


def _version(info: RunInfo) -> tuple[float, int | None, int | None]:
    return info.last_seen_at, info.first_step, info.last_step


def _on_grid(at: dict[int, int], pts: dict[int, float]) -> list[float | str | None]:
    """One run's points on the shared step grid (``at``: step -> index), ``None`` where it has none:
    only its own points are placed and encoded (the grid of 4 runs is ~4x longer than each series)."""
    out: list[float | str | None] = [None] * len(at)
    for s, v in zip(pts, wire_values(list(pts.values())), strict=True):
        out[at[s]] = v
    return out


def _last_tenths(session: Session, run_pk: int, metrics: list[str], span: tuple[int, int]) -> dict[str, tuple[int, int]]:
    """Per metric, the steps ``summarize`` takes the mean over (``last_tenth`` of the metric's steps in
    ``span``), so that one pass per run reads them all (``prime_means``)."""
    out = {}
    for m in metrics:
        fl = first_last(session, run_pk=run_pk, metric=m, lo=span[0], hi=span[1])
        if fl is not None:
            (a, _), (b, _) = fl
            out[m] = last_tenth(a, b)
    return out


def _compare(db: Database, principal: Principal, run_ids: list[str], metrics: list[str], from_step: int | None,
             to_step: int | None, max_points: int) -> dict:
    with db.read() as session:
        # A run of a project the token may not see is as unknown as one that does not exist.
        infos = {r: i for r, i in get_runs(session, run_ids=run_ids).items() if principal.sees(i.project)}
        missing = [r for r in run_ids if r not in infos]
        if missing:
            raise NotFound(f"unknown runs: {', '.join(missing)}", ["query", "run"])
        runs = [infos[r] for r in run_ids]
        alert_steps = first_alert_steps(session, run_ids)  # first warning / critical ("collapse") step
        # first_step and last_step are written together, so both are set or both are None.
        ranges = [(i.first_step, i.last_step) for i in runs if i.first_step is not None and i.last_step is not None]
        lo = hi = width = None
        if ranges:
            lo = max(min(a for a, _ in ranges), from_step or 0)
            hi = min(max(b for _, b in ranges), to_step if to_step is not None else max(b for _, b in ranges))
        span = (lo, hi) if lo is not None and hi is not None and lo <= hi else None
        active = span is not None
        if span is None:
            lo = hi = None
        else:
            blocks = uses_blocks(span[0], span[1], max_points)
            pieces = {(i.run_id, m): p for i in runs  # one read per run for all its metrics
                      for m, p in fetch_many(session, run_pk=i.pk, metrics=metrics, lo=span[0], hi=span[1],
                                             blocks=blocks).items()}
            nan = any(p.has_nan for p in pieces.values())
            width = bucket_width(span[0], span[1], max_points, 3 if nan else 2)
        url = str(cast(Engine, session.get_bind()).url)
        kept = lambda i, m: (url, i.pk, m, span)  # noqa: E731 (a summary's key; its version: _version(i))
        if span is not None:
            for info in runs:
                todo = [m for m in metrics if _SUMMARIES.peek(kept(info, m), _version(info)) is None]
                if todo:
                    prime_means(session, run_pk=info.pk, ranges=_last_tenths(session, info.pk, todo, span))
        metric_docs = {}
        summaries: dict[str, dict] = {i.run_id: {} for i in runs}
        for m in metrics:
            per_run = {}
            overall = {}
            for info in runs:
                if active:
                    p = points(pieces[info.run_id, m], width)
                    per_run[info.run_id] = dict(zip(p.step, p.value, strict=True))
                    overall[info.run_id] = p.overall
                else:
                    per_run[info.run_id] = {}
            steps = sorted(set().union(*per_run.values()))
            at = {st: i for i, st in enumerate(steps)}
            metric_docs[m] = {"step": steps, "values": {r: _on_grid(at, pts) for r, pts in per_run.items()}}
            ref = None
            for info in runs:
                if span is not None:
                    lo_, hi_, ov = span[0], span[1], overall[info.run_id]
                    s = _SUMMARIES.get(kept(info, m), _version(info), lambda: summarize(
                        session, run_pk=info.pk, metric=m, lo=lo_, hi=hi_, overall=ov))  # noqa: B023 (called at once)
                else:
                    s = Summary(best_is="max" if m in HIGHER_IS_BETTER else "min")
                doc = {k: (wire_value(v) if isinstance(v, float) else v) for k, v in vars(s).items()}
                if ref is None:
                    ref = s
                    doc["delta"] = None
                else:
                    doc["delta"] = {k: wire_value(v) for k, v in delta(s, ref).items()}
                summaries[info.run_id][m] = doc
    return {
        "runs": [
            {
                "run_id": i.run_id,
                "project": i.project,
                "name": i.name,
                "algorithm": i.algorithm,
                "first_step": i.first_step,
                "last_step": i.last_step,
                **alert_steps[i.run_id],
                "summary": summaries[i.run_id],
            }
            for i in runs
        ],
        "metrics": metric_docs,
        "downsampling": downsampling_doc(width, max_points, lo, hi),
    }
