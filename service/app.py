"""The FastAPI application: ``create_app(settings)`` builds it; nothing is built at import time.

The lifespan opens the database, creates the schema through the migrations on an empty database
(refusing one whose schema is behind), and runs the rules hook's background work.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sapo_monitor import __version__

from . import alerting_runtime
from .api import alerts, compare, health, incidents, ingest, rules, run_views, runs, webhooks
from .api.deps import AuthDep, DbDep, SettingsDep
from .api.health import RETRY_AFTER_S
from .auth import TokenCache
from .body_limits import BodyLimits
from .errors import ErrorOut, install_handlers
from .metrics import ServiceMetrics, StoredStateCollector, exposition
from .outbox.health import worker_source
from .settings import Settings
from .storage.db import Database, db_timeouts
from .storage.migrate import ensure_schema
from .ui import install_ui

__all__ = ["app_from_env", "create_app"]

log = logging.getLogger("sapo_monitor.service")
API_PREFIX = "/api/v1"
INGEST_ROUTE = API_PREFIX + "/runs/{run_id}/steps"


class _Observe:
    """ASGI middleware: request counters and latency by route template."""

    def __init__(self, app: ASGIApp, *, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:  # an exception becomes a 500 outside this middleware: count it as one
            self._count(scope, status["code"], time.perf_counter() - start)

    def _count(self, scope: Scope, status: int, seconds: float) -> None:
        route = scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        if scope.get("path", "").startswith(API_PREFIX + "/") and not template.startswith(API_PREFIX):
            template = API_PREFIX + template  # routes of included routers carry their own path only
        method = scope.get("method", "")
        code = str(status)
        self.metrics.http_requests.labels(method, template, code).inc()
        self.metrics.http_duration.labels(method, template).observe(seconds)
        if template == INGEST_ROUTE:
            self.metrics.ingest_requests.labels(code).inc()


def create_app(settings: Settings) -> FastAPI:
    """The service for ``settings``; the database is opened when the app starts (lifespan)."""
    settings.check_safe()
    service_metrics = ServiceMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = Database(settings.db, pool_size=settings.pool_size, timeouts=db_timeouts(settings))
        try:
            if settings.migrate_on_start:
                await run_in_threadpool(ensure_schema, db.engine)
            app.state.db = db
            async with alerting_runtime.lifespan(app):  # webhook delivery and silence checks
                yield
        finally:
            db.dispose()

    app = FastAPI(
        title="sapo-monitor",
        version=__version__,
        summary="Stability diagnostics for SAPO / GRPO / GSPO runs: ingest, compare, Prometheus, alerts.",
        lifespan=lifespan,
        docs_url=None,  # /docs is served from local Swagger UI assets (service/ui), not a CDN
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.service_metrics = service_metrics
    app.state.token_cache = TokenCache()
    app.state.metric_names = set()
    install_handlers(app)

    async def _validation(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        detail = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", "value_error"))}
            for e in exc.errors()
        ]
        return JSONResponse({"detail": detail}, status_code=422)

    async def _db_error(_request: Request, exc: Exception) -> JSONResponse:
        service_metrics.db_errors.inc()
        log.error("database error: %s", type(exc).__name__, exc_info=exc)
        return JSONResponse(
            {"detail": [{"loc": ["database"], "msg": "database error; retry later", "type": "db_error"}]},
            headers={"Retry-After": RETRY_AFTER_S},
            status_code=503,
        )

    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(SQLAlchemyError, _db_error)

    for module in (ingest, runs, run_views, compare, rules, alerts, incidents, webhooks):
        app.include_router(module.router, prefix=API_PREFIX)
    app.include_router(health.router)
    install_ui(app)  # the web UI at / and offline /docs

    delivery_worker_metrics = worker_source(lambda: getattr(app.state, "delivery_worker", None))

    @app.get("/metrics", response_class=Response, tags=["health"], summary="Prometheus metrics",
             responses={200: {"content": {"text/plain": {}}}, 401: {"model": ErrorOut},
                        403: {"model": ErrorOut}})
    async def metrics_route(db: DbDep, principal: AuthDep, cfg: SettingsDep) -> Response:
        """Run metrics from stored state (active runs only) and this process's own counters. With
        auth on, a ``read`` or ``admin`` token sees its own project's runs."""
        principal.require("read", None)
        collector = StoredStateCollector(db, window=cfg.active_window.total_seconds(), project=principal.project,
                                         sources=[alerting_runtime.metric_families, delivery_worker_metrics])
        body = await run_in_threadpool(exposition, service_metrics, collector)
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    app.add_middleware(BodyLimits, max_body=settings.max_body_bytes, max_decoded=settings.max_decoded_bytes)
    app.add_middleware(_Observe, metrics=service_metrics)  # outermost: it counts the limits' 413s too
    return app


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` (each worker process builds its app from the environment)."""
    return create_app(Settings())
