"""``/api/v1/webhooks``: subscriptions to incident notifications, their delivery records, test events.

Management needs an admin token; a project token manages its project's webhooks only. Secrets are
write-only: responses say ``has_secret`` and never return the secret.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..alerting_runtime import alerting_settings
from ..errors import BadRequest, ErrorOut, Forbidden, NotFound
from ..outbox.destinations import DestinationPolicy, RefusedDestination
from ..outbox.store import list_deliveries
from ..outbox.testing import enqueue_test_event
from ..outbox.webhooks import WebhookInfo, create_webhook, delete_webhook, get_webhook, list_webhooks
from ..storage.alert_models import Webhook
from .deps import AuthDep, DbDep
from .schemas import NAME_PATTERN, RUN_ID_PATTERN, storable_text

__all__ = ["router"]

router = APIRouter(tags=["alerts"])
WebhookIdPath = Annotated[int, Path(ge=1, le=2**31 - 1, description="Webhook id.")]
_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorOut} for code in (401, 403, 404, 422)}


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=2000, description="http(s) URL that receives a POST per incident notification.")
    format: Literal["json", "alertmanager", "slack"] = Field("json", description="Body format (README).")
    min_severity: Literal["warning", "critical"] = Field("warning", description="Lowest severity sent.")
    secret: str | None = Field(
        None, min_length=8, max_length=500,
        description="HMAC-SHA256 key for the X-Sapo-Signature header. Write-only: never returned.",
    )
    project: str | None = Field(None, pattern=NAME_PATTERN, description="Only alerts of runs in this project.")
    run_id: str | None = Field(None, pattern=RUN_ID_PATTERN, description="Only alerts of this run.")
    description: str | None = Field(None, max_length=200)

    _storable_text = field_validator("url", "secret", "description")(storable_text)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an absolute http:// or https:// URL")
        return value


class WebhookOut(BaseModel):
    id: int
    url: str
    format: str
    min_severity: str
    project: str | None
    run_id: str | None
    description: str | None
    enabled: bool
    has_secret: bool = Field(description="Whether requests are signed (the secret itself is never shown).")
    created_at: float


class DeliveryOut(BaseModel):
    id: int
    event_id: str
    attempt: int
    at: float
    duration_ms: float
    status_code: int | None
    outcome: Literal["delivered", "retry", "failed"]
    error: str | None


class TestEventOut(BaseModel):
    event_id: str


def _out(w: WebhookInfo) -> WebhookOut:
    return WebhookOut(**{k: v for k, v in w.__dict__.items() if k in WebhookOut.model_fields})


def _load(db, principal, webhook_id: int, role: str) -> WebhookInfo:  # type: ignore[no-untyped-def]
    principal.require(role, None)
    with db.read() as session:
        hook = get_webhook(session, webhook_id)
    if hook is None or (principal.project is not None and hook.project != principal.project):
        raise NotFound(f"webhook {webhook_id} not found", ["path", "webhook_id"])
    return hook


@router.post("/webhooks", status_code=201, response_model=WebhookOut, responses=_ERRORS, summary="Add a webhook")
def create_webhook_route(body: WebhookIn, db: DbDep, principal: AuthDep, request: Request) -> WebhookOut:
    """Every notification of an incident in scope whose severity reaches ``min_severity`` (opened,
    escalated, resolved, reopened, repeated) is POSTed to ``url`` (signed when a secret is set),
    retried with backoff.

    ``url`` must reach a public address: loopback, private, link-local and metadata destinations
    are refused (422) unless ``SAPO_MONITOR_WEBHOOK_ALLOW_HOSTS`` allows them."""
    principal.require("admin", body.project)
    alerting = alerting_settings(request.app)
    try:
        DestinationPolicy(alerting.webhook_allow_hosts).check_registration(body.url)
    except RefusedDestination as exc:
        raise BadRequest(f"webhook url refused: {exc}", ["body", "url"]) from exc
    project = body.project
    if principal.project is not None:
        project = project or principal.project
        if project != principal.project:
            raise Forbidden(f"this token is for project {principal.project!r}", ["body", "project"])
    with db.write() as session:
        hook = create_webhook(session, url=body.url, format=body.format, min_severity=body.min_severity,
                              secret=body.secret, project=project, run_id=body.run_id, description=body.description)
    return _out(hook)


@router.get("/webhooks", response_model=list[WebhookOut], responses=_ERRORS, summary="List webhooks")
def list_webhooks_route(db: DbDep, principal: AuthDep) -> list[WebhookOut]:
    principal.require("admin", None)
    with db.read() as session:
        hooks = list_webhooks(session)
    return [_out(h) for h in hooks if principal.project is None or h.project == principal.project]


@router.get("/webhooks/{webhook_id}", response_model=WebhookOut, responses=_ERRORS, summary="One webhook")
def get_webhook_route(webhook_id: WebhookIdPath, db: DbDep, principal: AuthDep) -> WebhookOut:
    return _out(_load(db, principal, webhook_id, "admin"))


@router.delete("/webhooks/{webhook_id}", status_code=204, responses=_ERRORS, summary="Delete a webhook")
def delete_webhook_route(webhook_id: WebhookIdPath, db: DbDep, principal: AuthDep) -> Response:
    """Pending deliveries are dropped with it."""
    _load(db, principal, webhook_id, "admin")
    with db.write() as session:
        delete_webhook(session, webhook_id=webhook_id)
    return Response(status_code=204)


@router.get("/webhooks/{webhook_id}/deliveries", response_model=list[DeliveryOut], responses=_ERRORS,
            summary="Delivery attempts of a webhook")
def deliveries_route(
    webhook_id: WebhookIdPath,
    db: DbDep,
    principal: AuthDep,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> list[DeliveryOut]:
    """Every attempt, oldest first: outcome ``delivered``, ``retry`` (failed, will retry) or ``failed``
    (gave up after the retry period)."""
    _load(db, principal, webhook_id, "admin")
    with db.read() as session:
        rows = list_deliveries(session, webhook_id=webhook_id, limit=limit, offset=offset)
    return [DeliveryOut(**{k: v for k, v in r.__dict__.items() if k in DeliveryOut.model_fields}) for r in rows]


@router.post("/webhooks/{webhook_id}/test", status_code=202, response_model=TestEventOut, responses=_ERRORS,
             summary="Send a test event")
def test_webhook_route(webhook_id: WebhookIdPath, db: DbDep, principal: AuthDep) -> TestEventOut:
    """Queues a test event (type ``test``) through the outbox; watch its attempts under ``/deliveries``."""
    _load(db, principal, webhook_id, "admin")
    with db.write() as session:
        row = session.get(Webhook, webhook_id)
        if row is None:
            raise NotFound(f"webhook {webhook_id} not found", ["path", "webhook_id"])
        event_id = enqueue_test_event(session, webhook=row)
    return TestEventOut(event_id=event_id)
