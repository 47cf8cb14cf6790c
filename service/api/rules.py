"""``/api/v1/rules``: the built-in pack (tunable) and custom rules. Management needs an admin token.

Scope and auth: with auth off every caller may change every rule. A token is scoped to a project:
its admin creates and changes rules of that project (``project`` defaults to it); service-wide rules
and the built-in pack can be tuned only where auth is off (the loopback default) or through a
project rule of the same kind.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sapo_monitor.client import wire

from ..errors import BadRequest, ErrorOut, Forbidden, NotFound, ServiceError
from ..rules.builtin import BUILTIN_IDS
from ..rules.detectors import KINDS
from ..rules.model import RULE_ID_RE, Rule, RuleValidationError
from ..storage.rule_defs import RuleConflict, create_rule, delete_rule, get_rule, list_rules, replace_rule
from .deps import AuthDep, DbDep
from .schemas import storable_text

__all__ = ["Conflict", "router"]

router = APIRouter(tags=["alerts"])
RuleIdPath = Annotated[str, Path(pattern=RULE_ID_RE.pattern, description="Rule id.")]
_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorOut} for code in (401, 403, 404, 409, 422)}


class Conflict(ServiceError):
    status_code = 409
    error_type = "conflict"


class RuleIn(BaseModel):
    """A rule definition. On PUT of a built-in rule only severity, for_steps, clear_steps, enabled,
    description and params may be given; params not given keep their defaults."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(None, description="Rule id (POST); must match the path on PUT.")
    kind: str | None = Field(None, description="Detector: threshold, rate_of_change, ewma_anomaly, or a built-in kind.")
    severity: str | None = Field(None, description="warning or critical.")
    params: dict[str, Any] | None = Field(None, description="Parameters of the kind (GET /rules/kinds).")
    for_steps: int | None = Field(None, description="Consecutive steps the condition must hold before firing.")
    clear_steps: int | None = Field(None, description="Consecutive clear steps before a firing alert resolves.")
    description: str | None = Field(None, description="What it means and what to check.")
    project: str | None = Field(None, description="Only runs of this project (null: every project).")
    run_id: str | None = Field(None, description="Only this run (null: every run in scope).")
    enabled: bool | None = None

    _storable_text = field_validator("id", "kind", "severity", "description", "project", "run_id")(storable_text)

    @field_validator("params")
    @classmethod
    def _storable_params(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        def walk(v: Any, where: str) -> None:
            texts = [v] if isinstance(v, str) else list(v) if isinstance(v, dict) else []
            for t in texts:
                problem = wire.text_problem(t)
                if problem:
                    raise ValueError(f"{where}: {problem}")
            children = v.items() if isinstance(v, dict) else enumerate(v) if isinstance(v, list) else ()
            for k, child in children:
                walk(child, f"{where}.{k}")

        if value is not None:
            walk(value, "params")
        return value


class RuleOut(BaseModel):
    id: str
    kind: str
    severity: str
    params: dict[str, Any]
    for_steps: int
    clear_steps: int
    description: str
    project: str | None
    run_id: str | None
    enabled: bool
    builtin: bool
    version: int


class ParamOut(BaseModel):
    name: str
    type: str
    default: Any
    required: bool
    help: str
    minimum: float | None
    maximum: float | None
    choices: list[str] | None


class KindOut(BaseModel):
    name: str
    summary: str
    params: list[ParamOut]
    time_based: bool


def rule_out(rule: Rule) -> RuleOut:
    return RuleOut(
        id=rule.id,
        kind=rule.kind,
        severity=rule.severity,
        params={k: list(v) if isinstance(v, tuple) else v for k, v in rule.params.items()},
        for_steps=rule.for_steps,
        clear_steps=rule.clear_steps,
        description=rule.description,
        project=rule.project,
        run_id=rule.run_id,
        enabled=rule.enabled,
        builtin=rule.builtin,
        version=rule.version,
    )


def _bad(err: RuleValidationError) -> BadRequest:
    return BadRequest(err.message, ["body", *err.field.split(".")])


def _scoped_doc(principal, doc: dict[str, Any], rule_id: str | None) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """Check the caller may manage a rule with this scope; a project token's rules default to its project."""
    principal.require("admin", None)
    if principal.project is None:
        return doc
    if rule_id in BUILTIN_IDS:
        raise Forbidden(
            "built-in rules are service-wide: tune them where auth is off, or create a rule of the same kind "
            f"scoped to project {principal.project!r}",
            ["path", "rule_id"],
        )
    doc.setdefault("project", principal.project)
    principal.require("admin", doc["project"])
    if doc["project"] is None:
        raise Forbidden("a project token cannot manage service-wide rules", ["body", "project"])
    return doc


@router.get("/rules", response_model=list[RuleOut], responses=_ERRORS, summary="List alert rules")
def list_rules_route(db: DbDep, principal: AuthDep) -> list[RuleOut]:
    """The built-in pack (with any stored tuning) and every custom rule visible to the caller."""
    principal.require("read", None)
    with db.read() as session:
        rules = list_rules(session)
    if principal.project is not None:
        rules = [r for r in rules if r.project in (None, principal.project)]
    return [rule_out(r) for r in rules]


@router.get("/rules/kinds", response_model=list[KindOut], responses=_ERRORS, summary="Rule kinds and parameters")
def list_kinds_route(principal: AuthDep) -> list[KindOut]:
    principal.require("read", None)
    return [
        KindOut(
            name=k.name,
            summary=k.summary,
            time_based=k.time_based,
            params=[
                ParamOut(name=p.name, type=p.type, default=p.default, required=p.required, help=p.help,
                         minimum=p.minimum, maximum=p.maximum, choices=list(p.choices) if p.choices else None)
                for p in k.params
            ],
        )
        for k in KINDS.values()
    ]


@router.get("/rules/{rule_id}", response_model=RuleOut, responses=_ERRORS, summary="One alert rule")
def get_rule_route(rule_id: RuleIdPath, db: DbDep, principal: AuthDep) -> RuleOut:
    principal.require("read", None)
    with db.read() as session:
        rule = get_rule(session, rule_id)
    hidden = NotFound(f"rule {rule_id!r} not found", ["path", "rule_id"])
    if rule is None:
        raise hidden
    principal.require_visible("read", rule.project, hidden)  # another project's rule: 404 as well
    return rule_out(rule)


@router.post("/rules", status_code=201, response_model=RuleOut, responses=_ERRORS, summary="Create a custom rule")
def create_rule_route(body: RuleIn, db: DbDep, principal: AuthDep) -> RuleOut:
    """Unknown kinds, unknown or out-of-range parameters give 422 naming them; an existing id 409."""
    doc = _scoped_doc(principal, body.model_dump(exclude_unset=True), body.id)
    try:
        with db.write() as session:
            rule = create_rule(session, doc=doc)
    except RuleValidationError as err:
        raise _bad(err) from err
    except RuleConflict as err:
        raise Conflict(str(err), ["body", "id"]) from err
    return rule_out(rule)


@router.put("/rules/{rule_id}", response_model=RuleOut, summary="Create or replace a rule",
            responses={**_ERRORS, 201: {"model": RuleOut, "description": "Created"}})
def put_rule_route(rule_id: RuleIdPath, body: RuleIn, db: DbDep, principal: AuthDep, response: Response) -> RuleOut:
    """A custom rule is replaced as a whole; a built-in rule keeps its kind and takes the given changes.
    Changing a rule restarts its detectors' learned state (baselines) on every run."""
    doc = _scoped_doc(principal, body.model_dump(exclude_unset=True), rule_id)
    try:
        with db.write() as session:
            existing = get_rule(session, rule_id)
            if existing is not None and principal.project is not None and existing.project != principal.project:
                raise Forbidden(f"rule {rule_id!r} belongs to another scope", ["path", "rule_id"])
            rule, created = replace_rule(session, rule_id=rule_id, doc=doc)
    except RuleValidationError as err:
        raise _bad(err) from err
    if created:
        response.status_code = 201
    return rule_out(rule)


@router.delete("/rules/{rule_id}", status_code=204, responses=_ERRORS, summary="Delete a custom rule")
def delete_rule_route(rule_id: RuleIdPath, db: DbDep, principal: AuthDep) -> Response:
    """Open alerts of a deleted rule resolve with the run's next step. Built-in rules cannot be deleted
    (409): PUT ``{"enabled": false}`` turns one off."""
    principal.require("admin", None)
    try:
        with db.write() as session:
            existing = get_rule(session, rule_id)
            hidden = NotFound(f"rule {rule_id!r} not found", ["path", "rule_id"])
            if existing is None or not principal.sees(existing.project):
                raise hidden
            if principal.project is not None and existing.project != principal.project:
                raise Forbidden(f"rule {rule_id!r} belongs to another scope", ["path", "rule_id"])
            delete_rule(session, rule_id=rule_id)
    except RuleConflict as err:
        raise Conflict(str(err), ["path", "rule_id"]) from err
    return Response(status_code=204)
