"""The versioned wire format between the client and the service (stdlib only): the one contract.

The service imports this package too, so it must never import torch or anything heavy. It owns:
the NaN/Infinity encoding (:mod:`.encoding`), the name rules and text limits (:mod:`.names`), the
step record with its validating decoder (:mod:`.records`), the JSON-schema fragments the service
publishes (:mod:`.schema`) and the metric catalogue (:mod:`.catalogue`).

A batch on the wire (``POST /api/v1/runs/{run_id}/steps``, gzip allowed)::

    {"schema": 1,
     "steps": [{"step": 12, "time": 1764000000.5,
                "metrics": {"ratio.mean": 1.01, "loss": "NaN"},
                "histograms": {"log_ratio": [42 integers]}}]}

Non-finite floats travel as the strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"`` so that any
JSON parser can read them; the service also accepts the bare tokens Python's ``json`` emits.
"""

from __future__ import annotations

from .catalogue import (
    CATALOGUE,
    LOG_RATIO_HIST_BINS,
    LOG_RATIO_HIST_EDGES,
    LOG_RATIO_HIST_NAME,
    log_ratio_hist_edges,
)
from .encoding import (
    INT64_MAX,
    INT64_MIN,
    JSON_MAX_DEPTH,
    NONFINITE_STRINGS,
    WireError,
    decode_float,
    decode_value,
    encode_float,
    encode_tree,
    encode_value,
    encode_values,
    is_nonfinite_string,
)
from .names import (
    ALGORITHM_MAX_LEN,
    METRIC_NAME_MAX_LEN,
    METRIC_NAME_PATTERN,
    METRIC_NAME_RE,
    PROJECT_MAX_LEN,
    PROJECT_PATTERN,
    PROJECT_RE,
    RUN_ID_MAX_LEN,
    RUN_ID_PATTERN,
    RUN_ID_RE,
    RUN_ID_RULE,
    RUN_NAME_MAX_LEN,
    TAG_KEY_MAX_LEN,
    TAG_VALUE_MAX_LEN,
    check_metric_name,
    check_run_id,
    check_text,
    is_metric_name,
    is_run_id,
    text_problem,
)
from .records import (
    MAX_HIST_BINS,
    MAX_STEP,
    MAX_STEPS_PER_BATCH,
    MAX_TIME,
    SCHEMA_VERSION,
    BatchTooLarge,
    RunSpec,
    StepRecord,
    decode_steps,
    encode_batch,
    known_metric_names,
)
from .schema import CONFIG_DESCRIPTION, COUNT_SCHEMA, RUN_ID_SCHEMA, STEP_BATCH_SCHEMA, VALUE_SCHEMA

__all__ = [
    "ALGORITHM_MAX_LEN",
    "CATALOGUE",
    "CONFIG_DESCRIPTION",
    "COUNT_SCHEMA",
    "INT64_MAX",
    "INT64_MIN",
    "JSON_MAX_DEPTH",
    "LOG_RATIO_HIST_BINS",
    "LOG_RATIO_HIST_EDGES",
    "LOG_RATIO_HIST_NAME",
    "MAX_HIST_BINS",
    "MAX_STEP",
    "MAX_STEPS_PER_BATCH",
    "MAX_TIME",
    "METRIC_NAME_MAX_LEN",
    "METRIC_NAME_PATTERN",
    "METRIC_NAME_RE",
    "NONFINITE_STRINGS",
    "PROJECT_MAX_LEN",
    "PROJECT_PATTERN",
    "PROJECT_RE",
    "RUN_ID_MAX_LEN",
    "RUN_ID_PATTERN",
    "RUN_ID_RE",
    "RUN_ID_RULE",
    "RUN_ID_SCHEMA",
    "RUN_NAME_MAX_LEN",
    "SCHEMA_VERSION",
    "STEP_BATCH_SCHEMA",
    "TAG_KEY_MAX_LEN",
    "TAG_VALUE_MAX_LEN",
    "VALUE_SCHEMA",
    "BatchTooLarge",
    "RunSpec",
    "StepRecord",
    "WireError",
    "check_metric_name",
    "check_run_id",
    "check_text",
    "decode_float",
    "decode_steps",
    "decode_value",
    "encode_batch",
    "encode_float",
    "encode_tree",
    "encode_value",
    "encode_values",
    "is_metric_name",
    "is_nonfinite_string",
    "is_run_id",
    "known_metric_names",
    "log_ratio_hist_edges",
    "text_problem",
]
