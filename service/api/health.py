"""``/healthz`` (liveness: the process answers) and ``/readyz`` (database reachable, schema current,
webhook delivery running).

``/healthz`` is a coroutine that does no I/O: it never waits for the database or for the worker
threads that database calls block, so it stays fast during an outage. ``/readyz`` runs its check
on threads of its own and answers within ``READY_TIMEOUT_S`` whatever the database does; every 503
carries ``Retry-After``.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import SQLAlchemyError

from ..errors import ErrorOut, NotReady
from ..storage.migrate import schema_state
from .deps import DbDep

__all__ = ["READY_TIMEOUT_S", "RETRY_AFTER_S", "router"]

router = APIRouter(tags=["health"])
READY_TIMEOUT_S = 1.0
RETRY_AFTER_S = "2"  # seconds, on every 503 about the database: clients retry soon, not after their max backoff
# Its own threads: a readiness check never queues behind requests blocked on the database.
_CHECKS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="sapo-readyz")


class HealthOut(BaseModel):
    status: str


def _not_ready(msg: str, loc: str) -> JSONResponse:
    return JSONResponse(NotReady(msg, [loc]).body(), status_code=503, headers={"Retry-After": RETRY_AFTER_S})


@router.get("/healthz", response_model=HealthOut, summary="Liveness")
async def healthz() -> HealthOut:
    return HealthOut(status="ok")


@router.get("/readyz", response_model=HealthOut, responses={503: {"model": ErrorOut}}, summary="Readiness")
async def readyz(db: DbDep, request: Request) -> HealthOut | JSONResponse:
    """200 when the database answers within a second with a current schema and webhook delivery runs;
    503 with ``Retry-After`` and the reason otherwise."""
    loop = asyncio.get_running_loop()
    try:
        state = await asyncio.wait_for(loop.run_in_executor(_CHECKS, schema_state, db.engine), READY_TIMEOUT_S)
    except TimeoutError:
        return _not_ready(f"database did not answer within {READY_TIMEOUT_S:g} s", "database")
    except SQLAlchemyError as exc:
        return _not_ready(f"database unreachable: {type(exc).__name__}", "database")
    if state != "current":
        return _not_ready(f"database schema is {state}; run `sapo-monitor db upgrade`", "database")
    worker = getattr(request.app.state, "delivery_worker", None)
    if worker is not None and not worker.delivering:
        return _not_ready("webhook delivery is stalled: the delivery worker has not read the outbox lately "
                          "(see the log)", "webhooks")
    return HealthOut(status="ready")
