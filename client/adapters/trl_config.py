"""What a TRL ``GRPOConfig`` means for the monitor: algorithm, stats thresholds, run config, ratio source.

Pure functions of the trainer's arguments (duck-typed, so this module never imports trl): they run
once at attach time and are tested without training anything.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from enum import Enum
from typing import Any

from sapo_monitor.client import wire

# Loss types TRL 1.16 implements, by the family the monitor files them under. `luspo` and anything at
# `importance_sampling_level="sequence"` clip one ratio per sequence, which is GSPO's scheme.
GRPO_FAMILY = frozenset({"grpo", "bnpo", "dr_grpo", "dapo", "luspo", "cispo", "vespo"})
SAPO_LOSSES = frozenset({"sapo"})
KNOWN_LOSSES = GRPO_FAMILY | SAPO_LOSSES

# Keys whose string values never leave the machine, whatever TrainingArguments.to_dict already masked:
# `hub_token`, `token` (from_pretrained kwargs), `*_api_key`, anything with secret/password/credential.
# Only the name's last word counts for "token", so `average_tokens_across_devices` stays.
_SECRET_KEY_RE = re.compile(
    r"(?:^|_)(?:token|api_?key|auth)$|secret|passw(?:or)?d|credential", re.IGNORECASE
)
REDACTED = "<redacted>"


class UnknownLossTypeWarning(UserWarning):
    """The trainer uses a ``loss_type`` this adapter does not know (a newer TRL)."""


def algorithm_for(args: Any) -> str:
    """``"sapo"``, ``"gspo"`` or ``"grpo"`` for a ``GRPOConfig``-like object.

    SAPO's soft gate wins over the importance-sampling level (a sequence-level SAPO is still SAPO);
    any other loss at ``importance_sampling_level="sequence"`` is GSPO; the rest of TRL's losses
    (grpo, bnpo, dr_grpo, dapo, cispo, vespo, luspo at token level) are the GRPO family.
    Raises ``ValueError`` for a loss type this adapter does not know, so that a new TRL name is noticed.
    """
    loss_type = str(args.loss_type)
    if loss_type not in KNOWN_LOSSES:
        raise ValueError(
            f"unknown TRL loss_type {loss_type!r}: sapo-monitor knows {sorted(KNOWN_LOSSES)}; "
            "pass algo=... to client.attach to name the algorithm yourself"
        )
    if loss_type in SAPO_LOSSES:
        return "sapo"
    if str(args.importance_sampling_level) == "sequence":
        return "gspo"
    return "grpo"


def stats_config_kwargs(args: Any) -> dict[str, float]:
    """``StatsConfig`` fields read from the trainer's own thresholds.

    The SAPO temperatures always come from the config (gate statistics are reported for every
    algorithm, so runs compare on one scale). TRL's ``epsilon`` / ``epsilon_high`` bound the token
    ratio at token level and the sequence ratio at sequence level (GSPO), so they fill the
    matching pair and the other pair keeps the monitor's defaults. For ``cispo`` TRL reads
    ``epsilon_high`` as an absolute cap on the ratio, so the high band is ``epsilon_high - 1``.
    """
    eps_low = float(args.epsilon)
    eps_high = float(args.epsilon_high) if args.epsilon_high is not None else eps_low
    out: dict[str, float] = {
        "tau_pos": float(args.sapo_temperature_pos),
        "tau_neg": float(args.sapo_temperature_neg),
    }
    loss_type = str(args.loss_type)
    if loss_type == "vespo":
        return out  # no clip band: keep the monitor's reference thresholds
    if loss_type == "cispo":
        if eps_high > 1.0:
            out["eps_high"] = eps_high - 1.0
        return out
    if str(args.importance_sampling_level) == "sequence":
        out["seq_eps_low"] = eps_low
        out["seq_eps_high"] = eps_high
    else:
        out["eps_low"] = eps_low
        out["eps_high"] = eps_high
    return out


def computes_old_logps(args: Any, num_iterations: int | None = None) -> bool:
    """Whether TRL computes ``old_per_token_logps`` for this config (TRL 1.16's rule).

    TRL skips them when ``gradient_accumulation_steps`` is a multiple of
    ``steps_per_generation * num_iterations`` (every micro-batch is then trained by the weights that
    generated it, so the ratio is 1 by construction), except with vLLM importance-sampling
    correction, where it always computes them.
    """
    iters = int(num_iterations if num_iterations is not None else args.num_iterations)
    generate_every = int(args.steps_per_generation) * iters
    if int(args.gradient_accumulation_steps) % generate_every != 0:
        return True
    return bool(getattr(args, "use_vllm", False) and getattr(args, "vllm_importance_sampling_correction", False))


def on_policy_explanation(args: Any) -> str:
    """The one log line that says why ratio statistics are flat and which setting changes that."""
    return (
        "sapo-monitor: ratio statistics of this TRL run are flat (ratio == 1, log-ratio == 0) by construction: "
        f"gradient_accumulation_steps={args.gradient_accumulation_steps} is a multiple of "
        f"steps_per_generation * num_iterations = {args.steps_per_generation} * {args.num_iterations}, so every "
        "micro-batch is trained by the same weights that generated it and TRL computes no old log-probs. "
        "Set num_iterations > 1 (or steps_per_generation > gradient_accumulation_steps) to reuse rollouts; "
        "ratio, gate and clip statistics then measure how far the policy moved. The run is tagged "
        "ratio_source=on_policy."
    )


def _jsonable(value: Any) -> Any:
    """A JSON-safe copy: enums by value, dataclasses as dicts, non-finite floats as strings, rest as str."""
    if isinstance(value, Enum):
        return _jsonable(value.value)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else wire.encode_float(value)  # the wire's "NaN", not repr's "nan"
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    return str(value)


def _redact(doc: Any) -> Any:
    if isinstance(doc, dict):
        return {
            k: (REDACTED if _SECRET_KEY_RE.search(k) and isinstance(v, str) and v else _redact(v))
            for k, v in doc.items()
        }
    if isinstance(doc, list):
        return [_redact(v) for v in doc]
    return doc


def run_config(args: Any) -> dict[str, Any]:
    """The full ``GRPOConfig`` as a JSON document, with every secret-looking value redacted.

    ``TrainingArguments.to_dict`` already masks ``*_token`` fields; the string value of any key naming
    a token, secret, password, API key or credential is replaced again here, also inside nested dicts
    (``model_init_kwargs={"token": ...}``).
    """
    raw = args.to_dict() if hasattr(args, "to_dict") else dataclasses.asdict(args)
    doc = _redact(_jsonable(raw))
    json.dumps(doc, allow_nan=False)  # fail here, not in the delivery thread
    return doc
