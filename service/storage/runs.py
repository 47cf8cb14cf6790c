"""Runs and projects: create or update, look up, list, delete. Keyword-only functions, no HTTP here."""

from __future__ import annotations

import time as _time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import BigInteger, bindparam, delete, event, func, insert, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from .models import ROLLUP_BLOCK, Project, Run, RunTag, Step, StepRollup
from .rows import decode_row, step_columns

__all__ = [
    "RUN_STATUSES",
    "RunInfo",
    "RunPage",
    "RunUpdate",
    "delete_run",
    "ensure_project",
    "get_run",
    "get_runs",
    "latest_values",
    "list_runs",
    "lock_run_for_ingest",
    "put_run",
]

RUN_STATUSES = ("running", "finished", "failed")


@dataclass
class RunInfo:
    pk: int
    run_id: str
    project: str
    name: str | None
    algorithm: str | None
    config: dict[str, Any]
    tags: dict[str, str]
    status: str
    created_at: float
    updated_at: float
    last_seen_at: float
    first_step: int | None
    last_step: int | None


@dataclass
class RunPage:
    runs: list[RunInfo]
    total: int
    limit: int
    offset: int


@dataclass
class RunUpdate:
    """The fields of ``PUT /runs/{run_id}``; ``None`` leaves a stored field as it is."""

    project: str
    name: str | None = None
    algorithm: str | None = None
    config: dict[str, Any] | None = None
    tags: dict[str, str] | None = None
    status: str | None = None


def _insert(session: Session, table):  # type: ignore[no-untyped-def]
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


def ensure_project(session: Session, name: str, *, cache: dict[str, int] | None = None) -> int:
    """The id of project ``name``, created when missing (safe under concurrent callers).

    ``cache`` only ever holds committed ids: an id read back from a committed row goes in at once, an
    id this transaction inserted goes in after it commits. (Caching it before would hand a rolled-back
    id, or one other requests cannot see yet, to every later write: a foreign-key violation each.)
    A concurrent first insert of the same name waits on the unique index and then does nothing.
    """
    if cache is not None and name in cache:
        return cache[name]
    pid = session.scalar(select(Project.id).where(Project.name == name))
    inserted = False
    if pid is None:
        pid = session.scalar(
            _insert(session, Project.__table__)
            .values(name=name, created_at=_time.time())
            .on_conflict_do_nothing(index_elements=["name"])
            .returning(Project.__table__.c.id)
        )
        inserted = pid is not None
        if pid is None:  # another transaction inserted it and committed meanwhile
            pid = session.scalar(select(Project.id).where(Project.name == name))
    assert pid is not None
    if cache is not None:
        if inserted or name in session.info.get(_PENDING, {}):
            session.info.setdefault(_PENDING, {})[name] = pid
            if not event.contains(session, "after_commit", _cache_committed):
                event.listen(session, "after_commit", _cache_committed)
                event.listen(session, "after_rollback", _forget_pending)
            session.info[_CACHE] = cache
        else:
            cache[name] = pid
    return int(pid)


_PENDING = "sapo_pending_projects"
_CACHE = "sapo_project_cache"


def _cache_committed(session: Session) -> None:
    """After a commit: the projects this session inserted are visible to everyone, so cache them."""
    pending = session.info.pop(_PENDING, {})
    cache = session.info.pop(_CACHE, None)
    if cache is not None:
        cache.update(pending)


def _forget_pending(session: Session) -> None:
    session.info.pop(_PENDING, None)


# Plain SQL (the same on SQLite and PostgreSQL): built once, it runs on every ingest request.
_LOCK_RUN = text(
    "INSERT INTO runs (run_id, project_id, config, status, created_at, updated_at, last_seen_at, first_step, "
    "last_step) VALUES (:run_id, :project_id, '{}', 'running', :now, :now, :now, :lo, :hi) "
    "ON CONFLICT (run_id) DO UPDATE SET last_seen_at = excluded.last_seen_at, "
    "first_step = CASE WHEN :lo IS NOT NULL AND (runs.first_step IS NULL OR runs.first_step > :lo) "
    "THEN :lo ELSE runs.first_step END, "
    "last_step = CASE WHEN :hi IS NOT NULL AND (runs.last_step IS NULL OR runs.last_step < :hi) "
    "THEN :hi ELSE runs.last_step END "
    "RETURNING id, project_id"
).bindparams(bindparam("lo", type_=BigInteger), bindparam("hi", type_=BigInteger))


def lock_run_for_ingest(
    session: Session, *, run_id: str, project_id: int, now: float, lo: int | None = None, hi: int | None = None
) -> tuple[int, int]:
    """Create the run with defaults if missing, mark it seen, widen its step range to ``[lo, hi]``,
    and return ``(run_pk, project_id)``.

    The upsert takes the run row's write lock (PostgreSQL) or the database write lock (SQLite), so
    ingests into one run are serialised for the rest of the transaction: rules see steps in order.
    """
    row = session.execute(
        _LOCK_RUN, {"run_id": run_id, "project_id": project_id, "now": now, "lo": lo, "hi": hi}
    ).one()
    return int(row[0]), int(row[1])


def put_run(session: Session, *, run_id: str, update_: RunUpdate, project_id: int, now: float) -> int:
    """Create or update a run (idempotent); returns its pk. Raises ``LookupError`` on a project clash."""
    t = Run.__table__
    values: dict[str, Any] = {"updated_at": now, "last_seen_at": now}
    for key in ("name", "algorithm", "status"):
        if getattr(update_, key) is not None:
            values[key] = getattr(update_, key)
    if update_.config is not None:
        values["config"] = orjson.dumps(update_.config).decode()
    stmt = _insert(session, t).values(
        run_id=run_id,
        project_id=project_id,
        created_at=now,
        **{"config": "{}", "status": "running", **values},
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["run_id"], set_={k: getattr(stmt.excluded, k) for k in values}
    ).returning(t.c.id, t.c.project_id)
    pk, stored_project = session.execute(stmt).one()
    if stored_project != project_id:
        raise LookupError(run_id)
    if update_.tags is not None:
        session.execute(delete(RunTag).where(RunTag.run_pk == pk))
        if update_.tags:
            session.execute(
                insert(RunTag),
                [{"run_pk": pk, "key": k, "value": v} for k, v in update_.tags.items()],
            )
    return int(pk)


def _run_select():  # type: ignore[no-untyped-def]
    return select(Run, Project.name).join(Project, Project.id == Run.project_id)


def _info(run: Run, project: str, tags: dict[str, str]) -> RunInfo:
    return RunInfo(
        pk=run.id,
        run_id=run.run_id,
        project=project,
        name=run.name,
        algorithm=run.algorithm,
        config=orjson.loads(run.config or "{}"),
        tags=tags,
        status=run.status,
        created_at=run.created_at,
        updated_at=run.updated_at,
        last_seen_at=run.last_seen_at,
        first_step=run.first_step,
        last_step=run.last_step,
    )


def _tags(session: Session, pks: Sequence[int]) -> dict[int, dict[str, str]]:
    out: dict[int, dict[str, str]] = {pk: {} for pk in pks}
    if pks:
        for pk, k, v in session.execute(
            select(RunTag.run_pk, RunTag.key, RunTag.value).where(RunTag.run_pk.in_(list(pks)))
        ):
            out[pk][k] = v
    return out


def get_run(session: Session, *, run_id: str) -> RunInfo | None:
    row = session.execute(_run_select().where(Run.run_id == run_id)).first()
    if row is None:
        return None
    run, project = row
    return _info(run, project, _tags(session, [run.id])[run.id])


def get_runs(session: Session, *, run_ids: Sequence[str]) -> dict[str, RunInfo]:
    rows = session.execute(_run_select().where(Run.run_id.in_(list(run_ids)))).all()
    tags = _tags(session, [r.id for r, _ in rows])
    return {r.run_id: _info(r, p, tags[r.id]) for r, p in rows}


def list_runs(
    session: Session,
    *,
    project: str | None = None,
    algorithm: str | None = None,
    status: str | None = None,
    tags: Mapping[str, str | None] | None = None,
    limit: int = 50,
    offset: int = 0,
) -> RunPage:
    """Runs newest-seen first. ``tags`` maps key -> value (or ``None`` for "has the key")."""
    q = _run_select()
    if project is not None:
        q = q.where(Project.name == project)
    if algorithm is not None:
        q = q.where(Run.algorithm == algorithm)
    if status is not None:
        q = q.where(Run.status == status)
    for key, value in (tags or {}).items():
        sub = select(RunTag.run_pk).where(RunTag.key == key)
        if value is not None:
            sub = sub.where(RunTag.value == value)
        q = q.where(Run.id.in_(sub))
    total = session.scalar(select(func.count()).select_from(q.subquery())) or 0
    rows = session.execute(q.order_by(Run.last_seen_at.desc(), Run.id.desc()).limit(limit).offset(offset)).all()
    tag_map = _tags(session, [r.id for r, _ in rows])
    return RunPage([_info(r, p, tag_map[r.id]) for r, p in rows], int(total), limit, offset)


def delete_run(session: Session, *, run_pk: int) -> None:
    """Delete a run with its steps, rollups and tags (explicitly: SQLite may have foreign keys off)."""
    for table in (StepRollup, Step, RunTag):
        session.execute(delete(table).where(table.run_pk == run_pk))
    session.execute(delete(Run).where(Run.id == run_pk))


def latest_values(session: Session, *, run_pk: int, lookback: int = 2 * ROLLUP_BLOCK) -> dict[str, tuple[int, float]]:
    """Each metric's latest value among the run's last ``lookback`` stored steps, with its step."""
    cols = step_columns()
    rows = session.execute(
        select(*cols).where(cols[0] == run_pk).order_by(cols[1].desc()).limit(lookback)
    ).all()
    out: dict[str, tuple[int, float]] = {}
    for row in rows:
        for metric, value in decode_row(row).items():
            if metric not in out:
                out[metric] = (int(row[1]), value)
    return dict(sorted(out.items()))
