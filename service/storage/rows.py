"""How a step record becomes a ``steps`` row and back (NaN kept, unknown metrics in JSON).

Row tuples follow :data:`STEP_COLUMN_NAMES`: ``run_pk, step, time, <catalogue columns>, nan, hist,
extra``. Non-finite values inside the JSON columns are written as the wire strings.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, cast

import orjson
from sapo_monitor.client.wire import LOG_RATIO_HIST_NAME, StepRecord, decode_float, encode_float
from sqlalchemy import Column, Table

from .models import CATALOGUE_COLUMNS, Step

__all__ = [
    "CATALOGUE_NAMES",
    "STEP_COLUMN_NAMES",
    "decode_row",
    "encode_rows",
    "json_float",
    "step_columns",
]

CATALOGUE_NAMES: tuple[str, ...] = tuple(CATALOGUE_COLUMNS)
_CATALOGUE_SET = frozenset(CATALOGUE_NAMES)
STEP_COLUMN_NAMES: tuple[str, ...] = (
    "run_pk", "step", "time", *CATALOGUE_COLUMNS.values(), "nan", "hist", "extra",
)
_N_CAT = len(CATALOGUE_NAMES)


def step_columns() -> list[Column]:
    """The ``steps`` columns in row-tuple order."""
    table = cast(Table, Step.__table__)
    return [cast(Column, table.c[name]) for name in STEP_COLUMN_NAMES]


json_float = encode_float  # a float for a JSON column: the wire's encoding


def encode_rows(run_pk: int, records: Iterable[StepRecord]) -> list[tuple]:
    """Row tuples for ``steps``; NaN catalogue values become NULL plus a name in ``nan``."""
    rows = []
    names = CATALOGUE_NAMES
    for rec in records:
        m = rec.metrics
        values: list[Any] = list(map(m.get, names))
        nan_names = None
        total = sum(m.values())
        if total - total != 0:  # some value is NaN or infinite (or the sum overflowed): look closer
            for i, v in enumerate(values):
                if v is not None and v != v:
                    values[i] = None
                    nan_names = names[i] if nan_names is None else f"{nan_names},{names[i]}"
        unknown = m.keys() - _CATALOGUE_SET
        extra_m: dict[str, Any] | None = None
        if unknown:
            if total - total == 0:  # all finite: orjson writes them as they are (sorted in C below)
                extra_m = m if len(unknown) == len(m) else {k: m[k] for k in unknown}
            else:
                extra_m = {k: json_float(m[k]) for k in unknown}
        hists = rec.histograms
        hist = hists.get(LOG_RATIO_HIST_NAME)
        extra = None
        if extra_m or (hists and (len(hists) > 1 or hist is None)):
            doc: dict[str, Any] = {}
            if extra_m:
                doc["m"] = extra_m
            other_h = {k: v for k, v in hists.items() if k != LOG_RATIO_HIST_NAME}
            if other_h:
                doc["h"] = other_h
            extra = orjson.dumps(doc, option=orjson.OPT_SORT_KEYS).decode()
        rows.append(
            (
                run_pk,
                rec.step,
                rec.time,
                *values,
                nan_names,
                None if hist is None else orjson.dumps(hist).decode(),
                extra,
            )
        )
    return rows


def decode_row(row: Sequence[Any]) -> dict[str, float]:
    """Metric values of one ``steps`` row (in :data:`STEP_COLUMN_NAMES` order), NaN restored."""
    out: dict[str, float] = {}
    for name, v in zip(CATALOGUE_NAMES, row[3 : 3 + _N_CAT], strict=False):
        if v is not None:
            out[name] = float(v)
    nan = row[3 + _N_CAT]
    if nan:
        for name in nan.split(","):
            out[name] = math.nan
    extra = row[5 + _N_CAT]
    if extra:
        for k, v in orjson.loads(extra).get("m", {}).items():
            out[k] = decode_float(v)
    return out


def decode_histograms(row: Sequence[Any]) -> dict[str, list[int]]:
    """Histograms of one ``steps`` row."""
    out: dict[str, list[int]] = {}
    hist = row[4 + _N_CAT]
    if hist:
        out[LOG_RATIO_HIST_NAME] = orjson.loads(hist)
    extra = row[5 + _N_CAT]
    if extra:
        out.update(orjson.loads(extra).get("h", {}))
    return out
