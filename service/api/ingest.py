"""Writing: ``PUT /runs/{run_id}`` and ``POST /runs/{run_id}/steps``."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from sapo_monitor.client.wire import RUN_ID_MAX_LEN, STEP_BATCH_SCHEMA, StepRecord
from starlette.concurrency import run_in_threadpool

from ..decode import decode_body, decode_json, parse_steps
from ..errors import ErrorOut, Forbidden, PayloadTooLarge
from ..ingestion import IngestResult, ingest_steps
from ..storage.runs import RunUpdate, ensure_project, get_run, put_run
from .deps import AuthDep, DbDep, SettingsDep
from .runs import run_out
from .schemas import RUN_ID_PATTERN, FiringAlertOut, IngestOut, RunIn, RunOut

__all__ = ["router"]

router = APIRouter(tags=["ingest"])
RunIdPath = Annotated[str, Path(pattern=RUN_ID_PATTERN, max_length=RUN_ID_MAX_LEN, description="Run id chosen by the client.")]
_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorOut} for code in (401, 403, 413, 422)}

@router.put("/runs/{run_id}", response_model=RunOut, responses=_ERRORS, summary="Create or update a run")
def put_run_route(run_id: RunIdPath, body: RunIn, db: DbDep, principal: AuthDep) -> RunOut:
    """Idempotent: the same body twice leaves one run. Fields left out keep their stored values; without
    ``project`` a new run goes into the token's project (``default`` without auth)."""
    project = body.project
    if project is None:  # omitted: the run keeps its project
        with db.read() as session:
            stored = get_run(session, run_id=run_id)
        project = stored.project if stored is not None else (principal.project or "default")
    principal.require("ingest", project)
    now = time.time()
    with db.write() as session:
        pid = ensure_project(session, project, cache=db.project_ids)
        try:
            put_run(
                session,
                run_id=run_id,
                update_=RunUpdate(project, body.name, body.algorithm, body.config, body.tags, body.status),
                project_id=pid,
                now=now,
            )
        except LookupError:
            raise Forbidden(
                f"run {run_id!r} belongs to another project; run ids are global", ["path", "run_id"]
            ) from None
    with db.read() as session:
        info = get_run(session, run_id=run_id)
    assert info is not None
    return run_out(info)


async def _read_body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(f"body of {length} bytes is larger than the limit of {limit} bytes", ["body"])
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body is larger than the limit of {limit} bytes", ["body"])
        chunks.append(chunk)
    return b"".join(chunks)


@router.post(
    "/runs/{run_id}/steps",
    response_model=IngestOut,
    responses=_ERRORS,
    summary="Ingest a batch of step records",
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": STEP_BATCH_SCHEMA}}}
    },
)
async def post_steps(run_id: RunIdPath, request: Request, db: DbDep, settings: SettingsDep,
                     principal: AuthDep) -> IngestOut:
    """Upsert per (run, step): a replayed batch never doubles a step. At most 5,000 steps per batch
    (413 above). ``Content-Encoding: gzip`` accepted. A run never ``PUT`` is created with defaults in
    the token's project (``default`` without auth)."""
    principal.require("ingest", None)
    raw = await _read_body(request, settings.max_body_bytes)  # gzip is already inflated (service.body_limits)
    encoding = request.headers.get("content-encoding")
    now = time.time()
    project = principal.project or "default"
    records: list[StepRecord] = []
    evaluate_rules = getattr(request.app.state, "rules_enabled", True)

    def store() -> IngestResult:  # parsing too runs off the event loop: a large batch takes a while
        raw_json = decode_body(raw, encoding, max_decoded=settings.max_decoded_bytes)
        records.extend(parse_steps(decode_json(raw_json), now=now, known_names=request.app.state.metric_names))
        with db.write() as session:
            pid = ensure_project(session, project, cache=db.project_ids)
            result = ingest_steps(session, run_id=run_id, project_id=pid, records=records, now=now,
                                  any_project=principal.project is None, evaluate_rules=evaluate_rules)
            if not result.stored:
                raise Forbidden(f"run {run_id!r} belongs to another project", ["path", "run_id"])
            return result

    result = await run_in_threadpool(store)
    request.app.state.service_metrics.ingest_records.inc(len(records))
    return IngestOut(
        run_id=run_id,
        accepted=len(records),
        first_step=records[0].step if records else None,
        last_step=records[-1].step if records else None,
        alerts=[FiringAlertOut(id=a.alert_id, rule=a.rule, severity=a.severity) for a in result.firing],
    )
