"""Names and text fields on the wire: one rule each, with its limit (the service's column sizes).

The client checks a run id at ``init`` with the same rule the service applies to its path, so a run
the client accepts is never refused later (its batches would wait in ``rejected/`` forever). A run id
is also the run's spool folder name: it starts with a letter or digit and holds no ``..``, so it can
never be ``.``, ``..`` or a hidden folder.
"""

from __future__ import annotations

import re

from .encoding import WireError

__all__ = [
    "ALGORITHM_MAX_LEN",
    "METRIC_NAME_MAX_LEN",
    "METRIC_NAME_PATTERN",
    "METRIC_NAME_RE",
    "PROJECT_MAX_LEN",
    "PROJECT_PATTERN",
    "PROJECT_RE",
    "RUN_ID_MAX_LEN",
    "RUN_ID_PATTERN",
    "RUN_ID_RE",
    "RUN_ID_RULE",
    "RUN_NAME_MAX_LEN",
    "TAG_KEY_MAX_LEN",
    "TAG_VALUE_MAX_LEN",
    "check_metric_name",
    "check_run_id",
    "check_text",
    "is_metric_name",
    "is_run_id",
    "text_problem",
]

RUN_ID_MAX_LEN = 200
# No look-ahead (the service's path validator and JSON Schema readers share this pattern): dots only
# between other characters, never two in a row; the length is checked beside it.
RUN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*$"
RUN_ID_RE = re.compile(RUN_ID_PATTERN)
RUN_ID_RULE = (f"1 to {RUN_ID_MAX_LEN} characters from A-Z a-z 0-9 . _ -, starting with a letter or digit, "
               "a dot only between two other characters")

METRIC_NAME_MAX_LEN = 200
METRIC_NAME_PATTERN = rf"^[a-z0-9_.]{{1,{METRIC_NAME_MAX_LEN}}}$"
METRIC_NAME_RE = re.compile(METRIC_NAME_PATTERN)
_METRIC_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_.")

PROJECT_MAX_LEN = 200
PROJECT_PATTERN = rf"^[A-Za-z0-9][A-Za-z0-9_.:\- ]{{0,{PROJECT_MAX_LEN - 1}}}$"
PROJECT_RE = re.compile(PROJECT_PATTERN)

# Column sizes of the service's tables (service/storage/models.py): longer text is a 422, never a 5xx.
RUN_NAME_MAX_LEN = 200
ALGORITHM_MAX_LEN = 64
TAG_KEY_MAX_LEN = 200
TAG_VALUE_MAX_LEN = 500


def is_run_id(run_id: object) -> bool:
    return isinstance(run_id, str) and len(run_id) <= RUN_ID_MAX_LEN and RUN_ID_RE.fullmatch(run_id) is not None


def check_run_id(run_id: object) -> str:
    """``run_id`` when it follows the rule, else :class:`WireError` naming it and the rule."""
    if not is_run_id(run_id):
        raise WireError(f"run id {run_id!r} is not valid: {RUN_ID_RULE}", ["run_id"])
    return run_id  # type: ignore[return-value]


def is_metric_name(name: object) -> bool:
    return isinstance(name, str) and 0 < len(name) <= METRIC_NAME_MAX_LEN and set(name) <= _METRIC_CHARS


def check_metric_name(name: object) -> str:
    if not is_metric_name(name):
        raise WireError(f"metric name {name!r} must match [a-z0-9_.]+ (at most {METRIC_NAME_MAX_LEN} characters)")
    return name  # type: ignore[return-value]


def text_problem(value: str, max_len: int | None = None) -> str | None:
    """Why ``value`` cannot be stored as text on both databases, or None (NUL, lone surrogates, length)."""
    if max_len is not None and len(value) > max_len:
        return f"at most {max_len} characters (got {len(value)})"
    if "\x00" in value:
        return "must not contain NUL characters"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "must be valid Unicode (no lone surrogates)"
    return None


def check_text(value: str, max_len: int | None = None, loc: list[str | int] | None = None) -> str:
    problem = text_problem(value, max_len)
    if problem is not None:
        raise WireError(problem, loc or [])
    return value
