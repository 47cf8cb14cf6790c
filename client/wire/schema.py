"""JSON-schema fragments of the wire format: what the service publishes in its OpenAPI document.

Built from the same constants :func:`~.records.decode_steps` checks, so the published contract and
the enforced one cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from .catalogue import LOG_RATIO_HIST_BINS, LOG_RATIO_HIST_NAME
from .encoding import INT64_MAX, JSON_MAX_DEPTH, NONFINITE_STRINGS
from .names import METRIC_NAME_PATTERN, RUN_ID_MAX_LEN, RUN_ID_PATTERN, RUN_ID_RULE
from .records import MAX_HIST_BINS, MAX_STEP, MAX_STEPS_PER_BATCH, MAX_TIME, SCHEMA_VERSION

__all__ = ["CONFIG_DESCRIPTION", "COUNT_SCHEMA", "RUN_ID_SCHEMA", "STEP_BATCH_SCHEMA", "VALUE_SCHEMA"]

VALUE_SCHEMA: dict[str, Any] = {
    "anyOf": [{"type": "number"}, {"type": "string", "enum": list(NONFINITE_STRINGS)}]
}
COUNT_SCHEMA: dict[str, Any] = {"type": "integer", "minimum": 0, "maximum": INT64_MAX}
RUN_ID_SCHEMA: dict[str, Any] = {
    "type": "string", "pattern": RUN_ID_PATTERN, "minLength": 1, "maxLength": RUN_ID_MAX_LEN,
    "description": f"Run id chosen by the client: {RUN_ID_RULE}.",
}
CONFIG_DESCRIPTION = (
    f"Free-form run configuration (JSON object): integers within signed 64 bits, at most {JSON_MAX_DEPTH} "
    "levels deep, no NUL characters; NaN and infinities are kept as the strings 'NaN', 'Infinity', '-Infinity'."
)
_NAMES = {"pattern": METRIC_NAME_PATTERN}
STEP_BATCH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["schema", "steps"],
    "properties": {
        "schema": {"type": "integer", "enum": [SCHEMA_VERSION]},
        "steps": {
            "type": "array",
            # No maxItems: above the limit the answer is 413 (with the limit), not a validation error.
            "description": f"At most {MAX_STEPS_PER_BATCH} step records per request (413 above).",
            "items": {
                "type": "object",
                "required": ["step"],
                "properties": {
                    "step": {"type": "integer", "minimum": 0, "maximum": MAX_STEP - 1},
                    "time": {
                        "anyOf": [{"type": "number", "minimum": 0, "maximum": MAX_TIME}, {"type": "null"}],
                        "description": "Epoch seconds; absent or null means arrival time.",
                    },
                    "metrics": {
                        "type": "object",
                        "propertyNames": _NAMES,
                        "additionalProperties": VALUE_SCHEMA,
                        "description": "Metric name -> value; integers beyond float range are refused (422).",
                    },
                    "histograms": {
                        "anyOf": [
                            {
                                "type": "object",
                                "propertyNames": _NAMES,
                                "properties": {
                                    LOG_RATIO_HIST_NAME: {
                                        "type": "array",
                                        "items": COUNT_SCHEMA,
                                        "minItems": LOG_RATIO_HIST_BINS,
                                        "maxItems": LOG_RATIO_HIST_BINS,
                                    }
                                },
                                "additionalProperties": {"type": "array", "items": COUNT_SCHEMA,
                                                         "maxItems": MAX_HIST_BINS},
                            },
                            {"type": "null"},
                        ]
                    },
                },
            },
        },
    },
}
