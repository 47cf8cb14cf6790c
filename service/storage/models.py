"""Tables: projects, API tokens, runs, run tags, steps and per-block step rollups.

Layout (measured in ``bench/ingest.py``, explained in the README):

* ``steps``: one row per (run, step). Every catalogue metric (``wire.CATALOGUE``) is a typed float
  column (``m_`` + name with ``.`` -> ``_``); metrics outside the catalogue and extra histograms go to a
  JSON text column; the 42-bin log-ratio histogram is a JSON text column. SQLite turns NaN into NULL,
  so NaN catalogue values are stored as NULL on both databases and their names are listed in
  ``nan`` (comma-separated): NULL without a name in ``nan`` means "absent".
* ``step_rollups``: one row per (run, block of ``ROLLUP_BLOCK`` steps) with, per catalogue metric,
  the min and max with the step where each occurs and the first NaN step (typed columns; metrics
  outside the catalogue in JSON), plus the block's summed log-ratio histogram (one column per bin).
  A batch of new steps is merged into these rows by the upsert itself (SQL ``CASE``/sums), so ingest
  never reads them back. Series and compare
  queries over long runs read these (a 100,000-step run is 1,563 rows) instead of every step.

Times are epoch seconds (floats) so both databases store and compare them the same way.
"""

from __future__ import annotations

from typing import cast

from sapo_monitor.client.wire import CATALOGUE, LOG_RATIO_HIST_BINS
from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "CATALOGUE_COLUMNS",
    "ROLLUP_BLOCK",
    "ROLLUP_STATS",
    "ApiToken",
    "Base",
    "Project",
    "Run",
    "RunTag",
    "Step",
    "StepRollup",
    "hist_column",
    "metric_column",
    "rollup_column",
]

# Steps per rollup block. Downsampled queries use buckets that are whole multiples of it.
ROLLUP_BLOCK = 64

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base; other modules (alerts) add their tables to ``Base.metadata``."""

    metadata = MetaData(naming_convention=NAMING)


def metric_column(name: str) -> str:
    """The ``steps`` column holding catalogue metric ``name``."""
    return "m_" + name.replace(".", "_")


# Catalogue metric name -> column name, in catalogue order (the order of the row tuples we insert).
CATALOGUE_COLUMNS: dict[str, str] = {name: metric_column(name) for name in CATALOGUE}
assert len(set(CATALOGUE_COLUMNS.values())) == len(CATALOGUE_COLUMNS), "catalogue column names collide"


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[float] = mapped_column(Float)


class ApiToken(Base):
    """A bearer token: only the SHA-256 of the secret is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    description: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[float] = mapped_column(Float)
    revoked_at: Mapped[float | None] = mapped_column(Float)


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (Index("ix_runs_project_id_last_seen_at", "project_id", "last_seen_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(200), unique=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str | None] = mapped_column(String(200))
    algorithm: Mapped[str | None] = mapped_column(String(64))
    config: Mapped[str] = mapped_column(Text, default="{}")  # JSON text
    status: Mapped[str] = mapped_column(String(16), default="running")
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    last_seen_at: Mapped[float] = mapped_column(Float, index=True)
    first_step: Mapped[int | None] = mapped_column(BigInteger)
    last_step: Mapped[int | None] = mapped_column(BigInteger)


class RunTag(Base):
    __tablename__ = "run_tags"
    __table_args__ = (UniqueConstraint("run_pk", "key"), Index("ix_run_tags_key_value", "key", "value"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_pk: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(200))
    value: Mapped[str] = mapped_column(String(500))


class Step(Base):
    __tablename__ = "steps"

    run_pk: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    step: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    time: Mapped[float] = mapped_column(Float)
    nan: Mapped[str | None] = mapped_column(Text)  # comma-separated catalogue names whose value is NaN
    hist: Mapped[str | None] = mapped_column(Text)  # JSON list of the 42 log-ratio bin counts
    extra: Mapped[str | None] = mapped_column(Text)  # JSON {"m": {name: value}, "h": {name: [counts]}}


# One float column per catalogue metric, added to the mapped table (declaring 59 attributes by hand
# would only restate the catalogue).
for _name, _col in CATALOGUE_COLUMNS.items():
    cast(Table, Step.__table__).append_column(Column(_col, Float, nullable=True))


# Per-metric statistics kept for every rollup block, as typed columns: ``<metric column>_<suffix>``.
ROLLUP_STATS: tuple[tuple[str, type], ...] = (
    ("min", Float),
    ("min_step", BigInteger),
    ("max", Float),
    ("max_step", BigInteger),
    ("nan_step", BigInteger),  # first step in the block whose value is NaN
)


def hist_column(i: int) -> str:
    """The ``step_rollups`` column summing bin ``i`` of the log-ratio histogram."""
    return f"h{i:02d}"


def rollup_column(name: str, stat: str) -> str:
    """The ``step_rollups`` column holding ``stat`` of catalogue metric ``name``."""
    return f"{metric_column(name)}_{stat}"


class StepRollup(Base):
    """One row per (run, block of ``ROLLUP_BLOCK`` steps); catalogue stats as columns (added below)."""

    __tablename__ = "step_rollups"

    run_pk: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    block: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    steps: Mapped[int] = mapped_column(Integer)  # stored steps in the block
    hist_steps: Mapped[int] = mapped_column(Integer)  # steps that carried a log-ratio histogram
    extra: Mapped[str | None] = mapped_column(Text)  # JSON: {metric: [min, min_step, max, max_step, nan_step]}


# The block's log-ratio histogram, summed: one integer column per bin, so merging is SQL arithmetic.
for _i in range(LOG_RATIO_HIST_BINS):
    cast(Table, StepRollup.__table__).append_column(Column(hist_column(_i), BigInteger, nullable=False))
for _name in CATALOGUE_COLUMNS:
    for _stat, _type in ROLLUP_STATS:
        cast(Table, StepRollup.__table__).append_column(Column(rollup_column(_name, _stat), _type, nullable=True))
