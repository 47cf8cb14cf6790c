"""``/healthz`` (the process is up) and ``/readyz`` (database reachable, schema current)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from ..errors import ErrorOut, NotReady
from ..storage.migrate import schema_state
from .deps import DbDep

__all__ = ["router"]

router = APIRouter(tags=["health"])


class HealthOut(BaseModel):
    status: str


@router.get("/healthz", response_model=HealthOut, summary="Liveness")
def healthz() -> HealthOut:
    return HealthOut(status="ok")


@router.get("/readyz", response_model=HealthOut, responses={503: {"model": ErrorOut}}, summary="Readiness")
async def readyz(db: DbDep) -> HealthOut:
    try:
        state = await run_in_threadpool(schema_state, db.engine)
    except SQLAlchemyError as exc:
        raise NotReady(f"database unreachable: {type(exc).__name__}", ["database"]) from exc
    if state != "current":
        raise NotReady(f"database schema is {state}; run `sapo-monitor db upgrade`", ["database"])
    return HealthOut(status="ready")
